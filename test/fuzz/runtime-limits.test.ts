/**
 * The runtime at its limits: a context that runs out (an error where a layer attends to all of it,
 * a sliding ring where every layer has a window), token arguments of every wrong kind, and load /
 * close cycles whose memory must stay flat. The bad-input e2e tests cover the basic refusals;
 * these push past them.
 */
import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel, type LoadedModel, type LoadOptions } from '../../runtime/model.js';
import { RuntimeError } from '../../runtime/errors.js';
import {
  collect, createWorkspace, DENSE_GQA, errorMessage, expectRowsWithin, referenceFor, tokensFor, TOLERANCE, writeModelDir, type ModelDir, type Workspace,
} from '../e2e/helpers.js';
import { fuzzParameters, fuzzTimeout } from './settings.js';

let ws: Workspace;
/** Full attention, a context of 16. */
let full: ModelDir;
/** Every layer a window of 4 (rings of 4 + 4 - 1 slots), max_seq_len 16. */
let sliding: ModelDir;
/** One full layer, one window: the full one bounds the context. */
let mixed: ModelDir;

beforeAll(async () => {
  ws = await createWorkspace('limits');
  const base = { ...DENSE_GQA, rope_theta: 1e4, max_seq_len: 16 };
  [full, sliding, mixed] = await Promise.all([
    writeModelDir(ws.root, 'full', { params: base }, { seed: 900, dtype: 'f32' }),
    writeModelDir(ws.root, 'sliding', { params: { ...base, sliding_window: 4 } }, { seed: 901, dtype: 'f32' }),
    writeModelDir(ws.root, 'mixed', { params: { ...base, sliding_window: [null, 4] } }, { seed: 902, dtype: 'f32' }),
  ]);
});
afterAll(async () => {
  await ws?.remove();
});

async function withModel<T>(dir: ModelDir, run: (model: LoadedModel) => Promise<T>): Promise<T> {
  const model = await loadModel(dir.dir, { cacheDir: ws.cacheDir, maxTokens: 4 });
  try {
    return await run(model);
  } finally {
    model.close();
  }
}

describe('more tokens than max_seq_len', () => {
  it('a full-attention model refuses a prompt past its context, naming the numbers and the fix', async () => {
    await withModel(full, async (model) => {
      expect(await errorMessage(() => model.logits(tokensFor(full, 17, 910))))
        .toBe('tokens: 17 positions exceed the context of 16 (max_seq_len); shorten the prompt, or load with a larger maxSeqLen (--max-seq-len)');
    });
  });

  it('a model with one full-attention layer among windowed ones is bounded by that layer', async () => {
    await withModel(mixed, async (model) => {
      expect(await errorMessage(() => model.logits(tokensFor(mixed, 17, 911)))).toContain('17 positions exceed the context of 16');
    });
  });

  it('generation stops quietly at the end of a full-attention context', async () => {
    await withModel(full, async (model) => {
      // 12 prompt tokens fill positions 0..11; 4 generated tokens fill 12..15; the 5th is sampled from position 15's logits.
      const tokens = await collect(model.generate(tokensFor(full, 12, 912), { maxTokens: 50 }));
      expect(tokens).toHaveLength(5);
    });
  });

  it('a model whose every layer has a window slides past max_seq_len, matching the float64 reference at every position', async () => {
    const tokens = tokensFor(sliding, 40, 913);
    const expected = await referenceFor(sliding, tokens);
    await withModel(sliding, async (model) => {
      expect(model.plan.kv_cache.layers.map((l) => [l.kind, l.length])).toEqual([['rolling', 7], ['rolling', 7]]);
      // One prefill of 40 (in chunks of 4), then decode from position 20 on: both run past position 16.
      expectRowsWithin(await model.logits(tokens), expected, TOLERANCE.f32);
      const rows = await model.forward(tokens.slice(0, 20), 0, true);
      for (let pos = 20; pos < tokens.length; pos++) rows.push(...(await model.forward([tokens[pos]!], pos, false)));
      expectRowsWithin(rows, expected, TOLERANCE.f32);
      // And generation goes on past the context too.
      expect(await collect(model.generate(tokens.slice(0, 14), { maxTokens: 10 }))).toHaveLength(10);
    });
  });
});

describe('token arguments of every kind', () => {
  let model: LoadedModel;
  beforeAll(async () => {
    model = await loadModel(full.dir, { cacheDir: ws.cacheDir, maxTokens: 4 });
  });
  afterAll(() => model?.close());

  it('loadModel refuses a directory or options of the wrong type in one line', async () => {
    for (const [call, message] of [
      [() => loadModel(123 as unknown as string), /^loadModel: dir: is 123, not a model directory; pass the path/],
      [() => loadModel('', {}), /^loadModel: dir: is "", not a model directory/],
      [() => loadModel(full.dir, null as unknown as LoadOptions), /^loadModel: options: is null, not an object/],
      [() => loadModel(full.dir, { cacheDir: 123 as unknown as string }), /^--cache \(cacheDir\): is number, not a path/],
    ] as const) {
      expect(await errorMessage(call)).toMatch(message);
    }
  });

  it('refuses Infinity, 2^31, -0.5, a bigint, null, and a non-array, naming the argument', async () => {
    const bad: Array<[unknown, string]> = [
      [[1, Infinity], 'tokens: [1]: token id Infinity is not an integer'],
      [[2 ** 31], 'tokens: [0]: token id 2147483648 is out of range'],
      [[-0.5], 'tokens: [0]: token id -0.5 is not an integer'],
      [[1n], 'tokens: [0]: token id 1 is not an integer'],
      [[null], 'tokens: [0]: token id null is not an integer'],
      ['1,2,3', 'tokens: must be an array of token ids'],
      [{ length: 2, 0: 1, 1: 2 }, 'tokens: must be an array of token ids'],
      [new DataView(new ArrayBuffer(8)), 'tokens: must be an array of token ids'],
    ];
    for (const [tokens, message] of bad) expect(await errorMessage(() => model.logits(tokens as number[]))).toContain(message);
  });

  it('answers any list of values with logits or one RuntimeError line, and stays correct', async () => {
    const good = tokensFor(full, 6, 920);
    const expected = await model.logits(good);
    const value = fc.oneof(fc.integer({ min: -3, max: 515 }), fc.constantFrom(NaN, Infinity, -Infinity, -0, 0.5, 2 ** 53, '3', null, undefined, true, [], {}), fc.double());
    await fc.assert(fc.asyncProperty(fc.array(value, { maxLength: 20 }), async (tokens) => {
      try {
        const rows = await model.logits(tokens as number[]);
        expect(rows).toHaveLength(tokens.length);
        for (const row of rows) expect(row.every(Number.isFinite)).toBe(true);
      } catch (err) {
        expect(err).toBeInstanceOf(RuntimeError);
        expect((err as Error).message).not.toMatch(/[\n\r]/);
      }
    }), fuzzParameters(100));
    expect(await model.logits(good)).toEqual(expected);
  }, fuzzTimeout(100, 50));

  it('refuses a startPos that is fractional, negative, NaN or skips ahead', async () => {
    await model.forward([1, 2, 3], 0, false);
    for (const startPos of [0.5, -1, NaN, 4, 2 ** 53]) {
      expect(await errorMessage(() => model.forward([1], startPos, false))).toMatch(/^forward: startPos: .* does not continue the sequence \(next position 3\)/);
    }
  });
});

describe('load / close cycles', () => {
  /** Resident pages of this process, split as /proc/self/status reports them (kB → MiB). */
  function resident(): { file: number; anon: number } {
    const status = readFileSync('/proc/self/status', 'utf8');
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)![1]) / 1024;
    return { file: kb('RssFile'), anon: kb('RssAnon') };
  }

  it('100 cycles leave resident memory within a small bound of where 10 left it, and no mapping behind', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const weightsPath = sliding.safetensorsPath;
    const tokens = tokensFor(sliding, 8, 930);
    const cycle = async () => {
      const model = await loadModel(sliding.dir, { cacheDir: ws.cacheDir, maxTokens: 4 });
      await model.logits(tokens); // touches every weight page and the KV ring
      model.close();
    };
    for (let i = 0; i < 10; i++) await cycle();
    gc();
    const after10 = resident();
    for (let i = 0; i < 100; i++) await cycle();
    gc();
    const after110 = resident();
    const grew = `RssFile ${after10.file.toFixed(1)} → ${after110.file.toFixed(1)} MiB, RssAnon ${after10.anon.toFixed(1)} → ${after110.anon.toFixed(1)} MiB`;
    expect(readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.endsWith(weightsPath))).toEqual([]);
    // A mapping left behind keeps its touched weight pages (0.4 MiB here) resident as file pages:
    // 100 of them would add 40 MiB. File pages do not move with the JS heap, so the bound is tight.
    expect(after110.file - after10.file, grew).toBeLessThan(4);
    // Anonymous memory also holds the JS heap (each load renders sources with ts-morph), which
    // gc() does not hand back to the OS: a looser bound, still far below 100 leaked models.
    expect(after110.anon - after10.anon, grew).toBeLessThan(64);
  }, 120_000);
});
