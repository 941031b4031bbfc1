/**
 * One model, several sequences in turn: a model has one KV cache, and a generation whose cache
 * another call is about to change has it saved (mc_kv_save) and put back (mc_kv_load) before its
 * next step. So a generation gives the tokens it gives alone, bit for bit, whatever runs between
 * its steps, and each step stays one decode step (a replay of the sequence would round like a
 * prefill: on flat random weights, sampled tokens then differ within a few steps).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TpSize } from '../../compiler/plan/types.js';
import { loadModel, type GenerateOptions, type LoadedModel } from '../../runtime/model.js';
import { collect, createWorkspace, DENSE_GQA, errorMessage, tokensFor, writeModelDir, type ModelDir, type Workspace } from './helpers.js';
import { withoutSnapshots } from './without-snapshots.js';

let ws: Workspace;
beforeAll(async () => {
  ws = await createWorkspace('sequences');
});

/** A model directory written once per name (describes that share one also share its compiled library: CI time). */
const written = new Map<string, Promise<ModelDir>>();
function modelDir(name: string, params: Record<string, unknown>, dtype: 'f32' | 'bf16' | 'f16'): Promise<ModelDir> {
  if (!written.has(name)) written.set(name, writeModelDir(ws.root, name, { params: { ...params, max_seq_len: 96 } }, { seed: 900, dtype }));
  return written.get(name)!;
}
/** A small dense model in f32, prefilled in chunks of 2 (a 6-token prompt is 3 calls). */
const plain = () => modelDir('plain', DENSE_GQA, 'f32');
afterAll(async () => {
  await ws?.remove();
});

interface Case {
  what: string;
  name: string;
  params: Record<string, unknown>;
  dtype: 'f32' | 'bf16' | 'f16';
  tp?: TpSize;
  /** Prefill chunk: small ones make a prompt cross a ring's wrap in several calls. */
  maxTokens?: number;
}

const CASES: Case[] = [
  // Rings of 8 + 5 - 1 = 12 slots: prompts of 9-14 tokens and 24 steps wrap them, snapshots hold whole rings.
  { what: 'a sliding window of 8 (rings that wrap) in bf16, prefilled in chunks of 5', name: 'window', params: { ...DENSE_GQA, sliding_window: 8 }, dtype: 'bf16', maxTokens: 5 },
  // Full and windowed layers: a snapshot of part of a full cache beside whole rings.
  { what: 'a per-layer window list [null, 6] in f16', name: 'window-list', params: { ...DENSE_GQA, n_layers: 4, sliding_window: [null, 6] }, dtype: 'f16', maxTokens: 4 },
  { what: 'MoE top-2 of 4 experts in bf16', name: 'moe', params: { ...DENSE_GQA, moe: { num_experts: 4, num_experts_per_tok: 2 } }, dtype: 'bf16' },
  // Two ranks, a snapshot part each; a full layer's cache saved in part beside rings.
  { what: 'two tensor-parallel ranks, layers [full, window 6], f32', name: 'tp2', params: { ...DENSE_GQA, n_layers: 4, sliding_window: [null, 6] }, dtype: 'f32', tp: 2, maxTokens: 4 },
];

/** Counts, underneath the model (its private native group), the tokens of every forward call and the snapshots saved and put back. */
function watch(model: LoadedModel): { tokens: number[]; saves: number; loads: number } {
  const seen = { tokens: [] as number[], saves: 0, loads: 0 };
  const native = (model as unknown as { native: object }).native;
  const watched = new Proxy(native, {
    get: (target, key) => {
      const value: unknown = Reflect.get(target, key);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        if (key === 'forward') seen.tokens.push((args[0] as Int32Array).length);
        if (key === 'saveKv') seen.saves++;
        if (key === 'loadKv') seen.loads++;
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  Object.defineProperty(model, 'native', { value: watched, configurable: true });
  return seen;
}

/** Seeded sampling at temperature 1 over flat random logits: any change in the logits' bits soon changes a token. */
const sampled = (seed: number): GenerateOptions => ({ maxTokens: 24, temperature: 1, topP: 1, seed });

describe.each(CASES)('$what', (c) => {
  let source: ModelDir;
  let model: LoadedModel;
  beforeAll(async () => {
    source = await modelDir(c.name, c.params, c.dtype);
    model = await loadModel(source.dir, { cacheDir: ws.cacheDir, tp: c.tp ?? 1, maxTokens: c.maxTokens ?? 16 });
  });
  afterAll(() => model?.close());

  it('three generations at once each give the tokens they give alone', async () => {
    const prompts = [tokensFor(source, 9, 901), tokensFor(source, 14, 902), tokensFor(source, 11, 903)];
    const alone = [];
    for (const [i, p] of prompts.entries()) alone.push(await collect(model.generate(p, sampled(i))));
    const seen = watch(model);
    const together = await Promise.all(prompts.map((p, i) => collect(model.generate(p, sampled(i)))));
    expect(together).toEqual(alone);
    expect(alone[0]).toHaveLength(24);
    // No replay: the prompts (in chunks), then 23 one-token steps a generation, each after its cache was put back.
    const promptTokens = prompts.reduce((n, p) => n + p.length, 0);
    expect(seen.tokens.reduce((a, b) => a + b, 0)).toBe(promptTokens + 3 * 23);
    expect(seen.loads).toBeGreaterThanOrEqual(3 * 22);
    expect(seen.saves).toBeGreaterThanOrEqual(seen.loads);
  });

  it('sequences of their own (model.sequence()) interleaved call by call give the logits each gives alone, bit for bit', async () => {
    const calls = (seed: number) => [tokensFor(source, 9, seed), ...Array.from({ length: 6 }, (_, i) => tokensFor(source, 1 + (i % 3), seed + 1 + i))];
    const plans = [calls(940), calls(950), calls(960)];
    const alone: Float32Array[][][] = [];
    for (const plan of plans) {
      const s = model.sequence();
      const rows: Float32Array[][] = [];
      for (const part of plan) rows.push(await s.forward(part));
      alone.push(rows);
      s.close();
    }
    const seen = watch(model);
    const sequences = plans.map(() => model.sequence());
    const together = await Promise.all(sequences.map(async (s, i) => {
      const rows: Float32Array[][] = [];
      for (const part of plans[i]!) rows.push(await s.forward(part));
      return rows;
    }));
    expect(together).toEqual(alone);
    expect(sequences[0]!.tokens).toEqual(plans[0]!.flat());
    expect(seen.tokens.reduce((a, b) => a + b, 0)).toBe(plans.flat(2).length);  // each token run once
    for (const s of sequences) s.close();
  });

  it('calls between the steps of a generation (logits, forwards that continue them or the generation, another generation) change none of its tokens', async () => {
    const prompt = tokensFor(source, 10, 904);
    const undisturbed = await collect(model.generate(prompt, sampled(7)));
    const disturbed: number[] = [];
    for await (const token of model.generate(prompt, sampled(7))) {
      disturbed.push(token);
      if (disturbed.length % 5 === 1) await model.logits(tokensFor(source, 12 + disturbed.length, 905));
      if (disturbed.length === 6) await model.forward(tokensFor(source, 3, 906), 12 + 6);  // continues the logits() call's sequence
      if (disturbed.length === 12) await collect(model.generate(tokensFor(source, 6, 907), sampled(8)));
      // A bare forward() that continues the generation's own sequence (the cache holds it, as the last call's):
      // it writes past the generation's tokens, and the generation goes on from its own saved cache.
      if (disturbed.length === 3) await model.forward(tokensFor(source, 2, 908), prompt.length + 2);
    }
    expect(disturbed).toEqual(undisturbed);
  });
});

describe('a sequence of its own (model.sequence())', () => {
  it('continues its own tokens whatever ran on the model between its calls (where a bare forward() continues the last call\'s)', async () => {
    const source = await plain();
    const model = await loadModel(source.dir, { cacheDir: ws.cacheDir, maxTokens: 2 });
    try {
      const [a, b] = [tokensFor(source, 3, 971), tokensFor(source, 3, 972)];
      // The same calls, uninterrupted: a, then 5 at position 3 (a decode step, as the sequence runs it).
      const after = async (prefix: number[]) => (await model.forward(prefix, 0), (await model.forward([5], 3, false))[0]!);
      const expected = await after(a);
      const mine = model.sequence();
      await mine.forward(a);
      await model.logits(b);                     // another caller's sequence, as long as this one
      const [row] = await mine.forward([5], false);
      expect(row).toEqual(expected);
      await model.logits(b);
      const [bare] = await model.forward([5], 3, false);  // continues the last call's sequence: b, not a
      expect(bare).toEqual(await after(b));
      mine.close();
      expect(await errorMessage(() => mine.forward([1]))).toBe('sequence: is closed; make a new one with model.sequence()');
      expect(await errorMessage(() => model.sequence().forward([source.config.vocab_size]))).toMatch(/^tokens: \[0\]: token id \d+ is out of range/);
    } finally {
      model.close();
    }
  });
});

describe('a generation on a library without KV snapshots', () => {
  it('replays its sequence when another call ran between its steps (greedy: the same tokens here)', async () => {
    // The fallback path: what runs where mc_kv_* is missing or a snapshot cannot be kept.
    const source = await plain();
    const model = await loadModel(source.dir, { cacheDir: ws.cacheDir, maxTokens: 2 });
    try {
      withoutSnapshots(model);
      const prompt = tokensFor(source, 6, 911);
      const undisturbed = await collect(model.generate(prompt, { maxTokens: 10 }));
      const disturbed: number[] = [];
      for await (const token of model.generate(prompt, { maxTokens: 10 })) {
        disturbed.push(token);
        if (disturbed.length === 3) await model.logits(tokensFor(source, 9, 912));
      }
      expect(disturbed).toEqual(undisturbed);
    } finally {
      model.close();
    }
  });
});

// The libraries of two cases above (same names, params and chunk: the build cache has them).
describe.each([
  { what: 'one rank, every layer a ring of 8 + 5 - 1 slots, bf16', case: CASES[0]! },
  // A full layer's cache saved in part (15 positions: a partial 16-slot key block) beside rings, one part a rank.
  { what: 'two ranks, layers [full, window 6], f32', case: CASES[3]! },
])('KV snapshots in the addon: $what', ({ case: c }) => {
  let source: ModelDir;
  let model: LoadedModel;
  let native: { kvBytes(n: number): number; saveKv(n: number): Promise<ArrayBuffer>; loadKv(b: ArrayBuffer, n: number): Promise<void>; forward(t: Int32Array, s: number, a: boolean): Promise<Float32Array> };
  beforeAll(async () => {
    source = await modelDir(c.name, c.params, c.dtype);
    model = await loadModel(source.dir, { cacheDir: ws.cacheDir, maxTokens: c.maxTokens, tp: c.tp ?? 1 });
    native = (model as unknown as { native: typeof native }).native;
  });
  afterAll(() => model?.close());

  it('a sequence saved, overwritten by another and put back continues as if never left, bit for bit', async () => {
    const tokens = Int32Array.from(tokensFor(source, 23, 921));
    const run = async (ids: Int32Array, from: number) => {
      const rows: Float32Array[] = [];
      for (let p = from; p < ids.length; p += 4) rows.push(await native.forward(ids.subarray(p, Math.min(ids.length, p + 4)), p, true));
      return rows;
    };
    const prefix = 15;  // past the rings (wrapped), and not a whole number of 16-slot key blocks
    await run(tokens.subarray(0, prefix), 0);
    const expected = await run(tokens, prefix);
    await run(tokens.subarray(0, prefix), 0);
    const snapshot = await native.saveKv(prefix);
    expect(snapshot.byteLength).toBe(native.kvBytes(prefix));
    await run(Int32Array.from(tokensFor(source, 30, 922)), 0);  // another sequence over every slot
    await native.loadKv(snapshot, prefix);
    expect(await run(tokens, prefix)).toEqual(expected);
  });

  it('refuses a snapshot of another length than the sequence held, a buffer of the wrong size, positions past the context', async () => {
    await native.forward(Int32Array.of(1, 2, 3), 0, false);
    expect(await errorMessage(() => native.saveKv(2))).toMatch(/mc_kv_save failed: a snapshot of 2 positions of a sequence at position 3; save the sequence the model holds$/);
    expect(await errorMessage(() => native.loadKv(new ArrayBuffer(5), 3))).toMatch(/^loadKv: a snapshot of 3 positions takes \d+ bytes, got 5$/);
    if (c.tp === undefined) {  // every layer rolls: a sequence may pass max_seq_len, not the 2^30 positions of any sequence
      expect(native.kvBytes(2 ** 30)).toBeGreaterThan(0);
      expect(native.kvBytes(2 ** 30 + 1)).toBe(-1);
    } else {  // a full layer: max_seq_len bounds it
      expect(native.kvBytes(96)).toBeGreaterThan(0);
      expect(native.kvBytes(97)).toBe(-1);
    }
  });
});

describe('close() between two chunks of a long prompt', () => {
  it('rejects the call as a call after close() is rejected', async () => {
    const source = await plain();
    const model = await loadModel(source.dir, { cacheDir: ws.cacheDir, maxTokens: 2 });
    const call = model.logits(tokensFor(source, 8, 931));
    await new Promise((resolve) => setImmediate(resolve));
    model.close();
    expect(await errorMessage(() => call)).toBe('model: is closed; load it again with loadModel()');
  });
});
