/**
 * generate(): greedy decoding is the argmax of the full-sequence logits at every step; sampling is
 * reproducible from its seed; stop tokens, maxTokens and the end of the context end it; bad
 * options are refused with the option's name; logits with a NaN or infinity stop it with one line.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readSafetensorsHeader } from '../../compiler/weights/safetensors.js';
import { loadModel, type GenerateOptions, type LoadedModel } from '../../runtime/model.js';
import {
  argmax, collect, createWorkspace, DENSE_GQA, errorMessage, tokensFor, writeModelDir, type ModelDir, type Workspace,
} from './helpers.js';

const DENSE = { ...DENSE_GQA, rope_theta: 1e4 };

let ws: Workspace;
/** Window 8 in chunks of 4 (a ring of 11 slots): a long generation wraps the ring. */
let windowed: { dir: ModelDir; model: LoadedModel };
/** Full attention with max_seq_len 24: generation runs into the end of the context. */
let short: { dir: ModelDir; model: LoadedModel };

beforeAll(async () => {
  ws = await createWorkspace('generate');
  const windowedDir = await writeModelDir(ws.root, 'windowed', { params: { ...DENSE, sliding_window: 8 } }, { seed: 700, dtype: 'f32' });
  const shortDir = await writeModelDir(ws.root, 'short', { params: { ...DENSE, max_seq_len: 24 } }, { seed: 701, dtype: 'f32' });
  windowed = { dir: windowedDir, model: await loadModel(windowedDir.dir, { cacheDir: ws.cacheDir, maxTokens: 4 }) };
  short = { dir: shortDir, model: await loadModel(shortDir.dir, { cacheDir: ws.cacheDir }) };
});
afterAll(async () => {
  windowed?.model.close();
  short?.model.close();
  await ws?.remove();
});

/**
 * Expects every generated token to be the argmax of the logits at the position before it, from
 * one logits() call over prompt + generated (all but the last generated token, which is never fed).
 */
async function expectGreedy(model: LoadedModel, prompt: number[], generated: number[]): Promise<void> {
  const rows = await model.logits([...prompt, ...generated.slice(0, -1)]);
  generated.forEach((token, i) => {
    expect(token, `generated token ${i}`).toBe(argmax(rows[prompt.length - 1 + i]!));
  });
}

describe('greedy generation', () => {
  it('yields, at every step, the argmax of the full-sequence logits (30 tokens, wrapping a window\'s ring)', async () => {
    const prompt = tokensFor(windowed.dir, 6, 710);
    const generated = await collect(windowed.model.generate(prompt, { maxTokens: 30 }));
    expect(generated).toHaveLength(30);
    await expectGreedy(windowed.model, prompt, generated);
  });

  it('is greedy for a prompt longer than one prefill chunk', async () => {
    const prompt = tokensFor(windowed.dir, 13, 711);
    const generated = await collect(windowed.model.generate(prompt, { maxTokens: 8, temperature: 0 }));
    await expectGreedy(windowed.model, prompt, generated);
  });
});

describe('sampling', () => {
  const sample = (seed: number) => collect(windowed.model.generate(tokensFor(windowed.dir, 5, 720), { maxTokens: 16, temperature: 1, seed }));

  it('gives the same tokens for the same seed', async () => {
    expect(await sample(42)).toEqual(await sample(42));
  });

  it('gives different tokens for different seeds at temperature 1', async () => {
    expect(await sample(1)).not.toEqual(await sample(2));
  });

  it('with topP near 0 keeps only the most likely token, as greedy does', async () => {
    const prompt = tokensFor(windowed.dir, 5, 721);
    const nucleus = await collect(windowed.model.generate(prompt, { maxTokens: 10, temperature: 1, topP: 1e-9, seed: 3 }));
    expect(nucleus).toEqual(await collect(windowed.model.generate(prompt, { maxTokens: 10 })));
  });
});

describe('ending generation', () => {
  it('a stop token ends generation and is not yielded', async () => {
    const prompt = tokensFor(windowed.dir, 5, 730);
    const free = await collect(windowed.model.generate(prompt, { maxTokens: 12 }));
    // The first token (after the first) that did not occur before it: generation must end right there.
    const at = free.findIndex((t, i) => i > 0 && !free.slice(0, i).includes(t));
    expect(at).toBeGreaterThan(0);
    const stopped = await collect(windowed.model.generate(prompt, { maxTokens: 12, stop: [free[at]!] }));
    expect(stopped).toEqual(free.slice(0, at));
  });

  it('a stop token predicted first yields nothing', async () => {
    const prompt = tokensFor(windowed.dir, 5, 731);
    const [first] = await collect(windowed.model.generate(prompt, { maxTokens: 1 }));
    expect(await collect(windowed.model.generate(prompt, { maxTokens: 12, stop: [first!] }))).toEqual([]);
  });

  it('maxTokens bounds the number of tokens yielded', async () => {
    const prompt = tokensFor(windowed.dir, 5, 732);
    expect(await collect(windowed.model.generate(prompt, { maxTokens: 5 }))).toHaveLength(5);
    expect(await collect(windowed.model.generate(prompt, { maxTokens: 1 }))).toHaveLength(1);
    expect(await collect(windowed.model.generate(prompt, { maxTokens: 0 }))).toEqual([]);
  });

  it('a full-attention model stops at the end of its context (max_seq_len 24), without an error', async () => {
    const prompt = tokensFor(short.dir, 10, 733);
    const generated = await collect(short.model.generate(prompt, { maxTokens: 100 }));
    // Positions 0..23 are all run; the token predicted at position 23 is yielded but never fed.
    expect(generated).toHaveLength(24 - 10 + 1);
    await expectGreedy(short.model, prompt, generated);
  });

  it('a prompt that fills the whole context still yields the one token it predicts', async () => {
    const prompt = tokensFor(short.dir, 24, 734);
    expect(await collect(short.model.generate(prompt, { maxTokens: 5 }))).toHaveLength(1);
  });
});

describe('non-finite logits', () => {
  it('stop generation with the position and the value, while logits() returns them as they are', async () => {
    // The final norm's weights set to +inf: every logit becomes inf or NaN (inf - inf).
    const dir = await writeModelDir(ws.root, 'overflow', { params: DENSE }, { seed: 702, dtype: 'f32' });
    const norm = (await readSafetensorsHeader(dir.safetensorsPath)).tensors.get('norm.weight')!;
    const fd = openSync(dir.safetensorsPath, 'r+');
    writeSync(fd, new Uint8Array(new Float32Array((norm.end - norm.begin) / 4).fill(Infinity).buffer), 0, norm.end - norm.begin, norm.offset);
    closeSync(fd);
    const model = await loadModel(dir.dir, { cacheDir: ws.cacheDir });
    try {
      const prompt = tokensFor(dir, 5, 750);
      const [row] = await model.forward(prompt, 0, false);
      expect(row!.some((v) => !Number.isFinite(v))).toBe(true);
      const message = await errorMessage(() => collect(model.generate(prompt, { maxTokens: 3 })));
      expect(message).toMatch(/^generate: logits at position 4: hold (NaN|-?Infinity) at token id \d+: the forward pass produced a non-finite value, so no token can be sampled; the checkpoint may hold NaN or infinite weights, or weights so large that the activations overflow float32$/);
    } finally {
      model.close();
    }
  });
});

describe('bad generate options are refused, naming the option', () => {
  const prompt = [1, 2, 3];
  const BAD: Array<[string, Partial<GenerateOptions>, RegExp]> = [
    ['a negative temperature', { temperature: -1 }, /temperature.*-1/],
    ['a NaN temperature', { temperature: NaN }, /temperature.*NaN/],
    ['an infinite temperature', { temperature: Infinity }, /temperature.*Infinity/],
    ['topP 0', { topP: 0 }, /topP.*\(got 0\)/],
    ['topP above 1', { topP: 1.5 }, /topP.*1\.5/],
    ['a negative maxTokens', { maxTokens: -1 }, /maxTokens.*-1/],
    ['a fractional maxTokens', { maxTokens: 2.5 }, /maxTokens.*2\.5/],
  ];
  BAD.forEach(([what, options, pattern]) => {
    it(`${what}`, async () => {
      const message = await errorMessage(() => collect(windowed.model.generate(prompt, { maxTokens: 3, ...options })));
      expect(message).toMatch(pattern);
    });
  });

  it('an empty prompt', async () => {
    expect(await errorMessage(() => collect(windowed.model.generate([], { maxTokens: 3 })))).toMatch(/tokens.*empty/);
  });

  it('a prompt longer than a full-attention context', async () => {
    const message = await errorMessage(() => collect(short.model.generate(tokensFor(short.dir, 25, 740), { maxTokens: 3 })));
    expect(message).toMatch(/25 positions exceed the context of 24 \(max_seq_len\)/);
  });

  it('and the model still generates afterwards', async () => {
    await errorMessage(() => collect(windowed.model.generate(prompt, { maxTokens: 3, temperature: -1 })));
    expect(await collect(windowed.model.generate(prompt, { maxTokens: 3 }))).toHaveLength(3);
  });
});
