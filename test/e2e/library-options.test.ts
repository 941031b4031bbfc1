/**
 * The library's options and failures as a program sees them: options it cannot honour are refused
 * before anything loads, with a MistralCompileError naming the option (never a libgomp warning, a
 * TypeError or a crash), and a checkpoint changed under a loaded model fails the next call with a
 * WeightsError naming the file.
 */
import { utimesSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MistralCompileError } from '../../compiler/errors.js';
import { WeightsError } from '../../compiler/weights/errors.js';
import { EnvironmentError, RuntimeError } from '../../runtime/errors.js';
import { loadModel, type GenerateOptions, type LoadedModel, type LoadOptions } from '../../runtime/model.js';
import { collect, createWorkspace, DENSE_GQA, errorMessage, writeModelDir, type ModelDir, type Workspace } from './helpers.js';

let ws: Workspace;
let dense: ModelDir;
let model: LoadedModel;
beforeAll(async () => {
  ws = await createWorkspace('library-options');
  dense = await writeModelDir(ws.root, 'dense', { params: { ...DENSE_GQA } }, { seed: 910, dtype: 'f32' });
  model = await loadModel(dense.dir, { cacheDir: ws.cacheDir });
});
afterAll(async () => {
  model?.close();
  await ws?.remove();
});

describe('loadModel refuses options it cannot honour, before it loads anything', () => {
  const BAD: Array<[string, Partial<LoadOptions>, RegExp]> = [
    ['threads 0', { threads: 0 }, /^loadModel options: threads: must be an integer from 1 to 1024 \(got 0\); pass e\.g\. \d+/],
    ['threads -1', { threads: -1 }, /threads: must be an integer from 1 to 1024 \(got -1\)/],
    ['threads 1.5', { threads: 1.5 }, /threads: must be an integer .*\(got 1\.5\)/],
    ['threads "abc"', { threads: 'abc' as unknown as number }, /threads: must be an integer .*\(got abc\)/],
    ['threads 100000 (libgomp could not create them and ended the process)', { threads: 100_000 }, /threads: must be an integer from 1 to 1024 \(got 100000\)/],
    ['weights "foo"', { weights: 'foo' as 'map' }, /^loadModel options: weights: must be 'map' or 'copy' \(got "foo"\)/],
  ];
  BAD.forEach(([what, options, pattern]) => {
    it(what, async () => {
      const err = await loadModel(dense.dir, { cacheDir: ws.cacheDir, ...options }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RuntimeError);
      expect((err as Error).message).toMatch(pattern);
    });
  });
});

describe('an OMP_NUM_THREADS inherited from the environment', () => {
  for (const value of ['99999', '0', 'abc', '4,0']) {
    it(`${JSON.stringify(value)} is refused, naming it (libgomp ignored it with a warning, or crashed creating the threads)`, async () => {
      const saved = process.env.OMP_NUM_THREADS;
      process.env.OMP_NUM_THREADS = value;
      try {
        const err = await loadModel(dense.dir, { cacheDir: ws.cacheDir }).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(EnvironmentError);
        expect((err as Error).message).toMatch(new RegExp(`^environment: OMP_NUM_THREADS: ${JSON.stringify(JSON.stringify(value)).slice(1, -1)} is not a thread count from 1 to 1024 \\(or a list of them\\); unset it to use every core, or set it to e\\.g\\. \\d+$`));
      } finally {
        if (saved === undefined) delete process.env.OMP_NUM_THREADS;
        else process.env.OMP_NUM_THREADS = saved;
      }
    });
  }

  it('a good one, or a list (nested levels), loads; an explicit threads option takes the place of a bad one', async () => {
    const saved = process.env.OMP_NUM_THREADS;
    try {
      for (const [value, options] of [['2', {}], ['2,1', {}], ['99999', { threads: 2 }]] as const) {
        process.env.OMP_NUM_THREADS = value;
        const m = await loadModel(dense.dir, { cacheDir: ws.cacheDir, ...options });
        m.close();
      }
    } finally {
      if (saved === undefined) delete process.env.OMP_NUM_THREADS;
      else process.env.OMP_NUM_THREADS = saved;
    }
  });
});

describe('generate() refuses options it cannot honour', () => {
  const vocab = () => dense.config.vocab_size;
  const BAD: Array<[string, () => unknown, RegExp]> = [
    ['no options at all', () => undefined, /^generate: options: must be an object \(got undefined\); pass e\.g\. \{ maxTokens: 16 \}$/],
    ['stop as a string (it would stop on each of its characters)', () => ({ maxTokens: 3, stop: '170' }), /^generate: stop: must be an array of token ids \(got "170"\)/],
    ['a stop id outside the vocabulary', () => ({ maxTokens: 3, stop: [2, vocab()] }), /^generate: stop: holds (\d+), not a token id from 0 to (\d+) \(vocab_size \1\); pass ids of this model's vocabulary$/],
    ['a negative stop id', () => ({ maxTokens: 3, stop: [-1] }), /^generate: stop: holds -1, not a token id/],
    ['a fractional stop id', () => ({ maxTokens: 3, stop: [1.5] }), /^generate: stop: holds 1\.5, not a token id/],
  ];
  BAD.forEach(([what, options, pattern]) => {
    it(what, async () => {
      const err = await collect(model.generate([1, 2, 3], options() as GenerateOptions)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(MistralCompileError);
      expect((err as Error).message).toMatch(pattern);
    });
  });

  it('and generates with good ones afterwards', async () => {
    expect(await collect(model.generate([1, 2, 3], { maxTokens: 4, stop: [] }))).toHaveLength(4);
  });
});

it('a checkpoint modified under a loaded model: the next call fails with a WeightsError naming the file', async () => {
  const other = await writeModelDir(ws.root, 'other', { params: { ...DENSE_GQA } }, { seed: 911, dtype: 'f32' });
  const loaded = await loadModel(other.dir, { cacheDir: ws.cacheDir });
  try {
    expect(await loaded.logits([1, 2, 3])).toHaveLength(3);
    const later = new Date(Date.now() + 60_000);
    utimesSync(other.safetensorsPath, later, later);  // a rewrite in place changes the mtime
    const err = await loaded.logits([1, 2, 3]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WeightsError);
    expect((err as Error).message).toBe(`${other.safetensorsPath}: has been modified since it was mapped (the weights in memory may no longer be the checkpoint's); load it again once it is no longer being written`);
    expect(await errorMessage(() => loaded.logits([1]))).toMatch(/has been modified since it was mapped/);
  } finally {
    loaded.close();
  }
});
