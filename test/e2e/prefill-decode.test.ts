/**
 * Continuing a sequence: a prefill of n tokens followed by m single-token decode steps must give
 * the logits of one prefill of all n + m tokens (mistral-inference's own consistency check), also
 * when the steps run around a sliding window's KV ring and when prefills are split into chunks.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel, type LoadedModel } from '../../runtime/model.js';
import {
  createWorkspace, DENSE_GQA, errorMessage, expectRowsWithin, formatError, referenceFor, tokensFor, TOLERANCE, writeModelDir,
  type ModelDir, type ModelSource, type WeightDtype, type Workspace,
} from './helpers.js';

/** RoPE base 1e4: over a few dozen positions a wrong position shows more than with 1e6. */
const DENSE = { ...DENSE_GQA, rope_theta: 1e4 };

let ws: Workspace;
beforeAll(async () => {
  ws = await createWorkspace('decode');
});
afterAll(async () => {
  await ws?.remove();
});

/** Logits of every position: tokens[0..n) in one forward call, then one call per further token. */
async function prefillThenDecode(model: LoadedModel, tokens: number[], n: number): Promise<Float32Array[]> {
  const rows = await model.forward(tokens.slice(0, n), 0, true);
  for (let pos = n; pos < tokens.length; pos++) {
    const step = await model.forward([tokens[pos]!], pos, false);
    expect(step.length, `decode step at position ${pos}`).toBe(1);
    rows.push(step[0]!);
  }
  return rows;
}

interface Case {
  what: string;
  source: ModelSource;
  dtype: WeightDtype;
  n: number;
  m: number;
  maxTokens?: number;
  /** Expected KV ring length per layer (null: a full cache). */
  rings?: Array<number | null>;
}

const CASES: Case[] = [
  { what: 'full attention, n = 9, m = 15', source: { params: DENSE }, dtype: 'f32', n: 9, m: 15 },
  {
    what: 'window 8, n = 5, m = 20, chunks of 4 (a ring of 11 slots, wrapped twice while decoding)',
    source: { params: { ...DENSE, sliding_window: 8 } }, dtype: 'f32', n: 5, m: 20, maxTokens: 4, rings: [11, 11],
  },
  {
    what: 'window 8, n = 5, m = 20, chunks of 1 (a ring of exactly the window)',
    source: { params: { ...DENSE, sliding_window: 8 } }, dtype: 'f32', n: 5, m: 20, maxTokens: 1, rings: [8, 8],
  },
  {
    what: 'window 8, n = 19 prefilled in chunks of 4 across the wrap, m = 12',
    source: { params: { ...DENSE, sliding_window: 8 } }, dtype: 'f32', n: 19, m: 12, maxTokens: 4, rings: [11, 11],
  },
  {
    what: 'window list [null, 6] with MoE top-2 of 8, n = 7 in chunks of 3, m = 14',
    source: { params: { ...DENSE, sliding_window: [null, 6], moe: { num_experts: 8, num_experts_per_tok: 2 } } },
    dtype: 'f32', n: 7, m: 14, maxTokens: 3, rings: [null, 8],
  },
  {
    what: 'window 8, n = 5, m = 20, chunks of 4',
    source: { params: { ...DENSE, sliding_window: 8 } }, dtype: 'bf16', n: 5, m: 20, maxTokens: 4, rings: [11, 11],
  },
];

describe('prefill of n, then m decode steps, equals one prefill of n + m', () => {
  CASES.forEach((c, i) => {
    it(`for ${c.what}, ${c.dtype} weights: both within ${TOLERANCE[c.dtype].toExponential(0)} of each other and of the reference`, async (ctx) => {
      const modelDir = await writeModelDir(ws.root, `case-${i}`, c.source, { seed: 300 + i, dtype: c.dtype });
      const tokens = tokensFor(modelDir, c.n + c.m, 400 + i);
      const model = await loadModel(modelDir.dir, { cacheDir: ws.cacheDir, maxTokens: c.maxTokens });
      try {
        if (c.rings !== undefined) {
          expect(model.plan.kv_cache.layers.map((l) => (l.kind === 'rolling' ? l.length : null))).toEqual(c.rings);
        }
        const stepwise = await prefillThenDecode(model, tokens, c.n);
        const oneShot = await model.logits(tokens);
        const tolerance = TOLERANCE[c.dtype];
        const between = expectRowsWithin(stepwise, oneShot, tolerance);
        const reference = await referenceFor(modelDir, tokens);
        const vsReference = Math.max(expectRowsWithin(stepwise, reference, tolerance), expectRowsWithin(oneShot, reference, tolerance));
        ctx.annotate(`max relative L2: decode vs prefill ${formatError(between)}, vs reference ${formatError(vsReference)}`);
      } finally {
        model.close();
      }
    });
  });
});

describe('starting over and skipping ahead', () => {
  let modelDir: ModelDir;
  let model: LoadedModel;
  beforeAll(async () => {
    modelDir = await writeModelDir(ws.root, 'restart', { params: { ...DENSE, sliding_window: 8 } }, { seed: 350, dtype: 'f32' });
    model = await loadModel(modelDir.dir, { cacheDir: ws.cacheDir, maxTokens: 4 });
  });
  afterAll(() => {
    model?.close();
  });

  it('logits() of the same tokens twice gives identical logits', async () => {
    const tokens = tokensFor(modelDir, 20, 450);
    const first = await model.logits(tokens);
    const second = await model.logits(tokens);
    expect(second).toEqual(first);
  });

  it('restarting at startPos 0 after a longer sequence (whose keys still fill the ring) gives the fresh sequence\'s logits', async () => {
    await model.logits(tokensFor(modelDir, 30, 451));
    const tokens = tokensFor(modelDir, 12, 452);
    const restarted = await model.forward(tokens, 0, true);
    expectRowsWithin(restarted, await referenceFor(modelDir, tokens), TOLERANCE.f32);
  });

  it('restarting at startPos 0 in the middle of a decode gives the same logits as the first time', async () => {
    const tokens = tokensFor(modelDir, 10, 453);
    const first = await prefillThenDecode(model, tokens, 6);
    await model.forward(tokensFor(modelDir, 3, 454), 10, false); // the sequence goes on elsewhere …
    const again = await prefillThenDecode(model, tokens, 6); // … and starts over
    expect(again).toEqual(first);
  });

  it('forward() without allLogits returns the last position\'s logits only, also for a prompt of several chunks', async () => {
    const tokens = tokensFor(modelDir, 10, 458);
    const last = await model.forward(tokens, 0, false);
    expect(last).toHaveLength(1);
    expectRowsWithin(last, (await referenceFor(modelDir, tokens)).slice(-1), TOLERANCE.f32);
  });

  it('a startPos that skips ahead is rejected, naming startPos, the value and the next position', async () => {
    await model.forward(tokensFor(modelDir, 5, 455), 0, false);
    const message = await errorMessage(() => model.forward([7], 7, false));
    expect(message).toContain('startPos');
    expect(message).toContain('7 does not continue the sequence');
    expect(message).toContain('next position 5');
  });

  it('a startPos that goes back (other than to 0) is rejected', async () => {
    await model.forward(tokensFor(modelDir, 5, 456), 0, false);
    const message = await errorMessage(() => model.forward([7], 3, false));
    expect(message).toMatch(/startPos.*3 does not continue the sequence.*next position 5/);
  });

  it('a negative or fractional startPos is rejected', async () => {
    expect(await errorMessage(() => model.forward([7], -1, false))).toContain('startPos');
    expect(await errorMessage(() => model.forward([7], 2.5, false))).toContain('startPos');
  });

  it('after a rejected startPos the sequence continues where it was', async () => {
    const tokens = tokensFor(modelDir, 8, 457);
    await model.forward(tokens.slice(0, 5), 0, false);
    await errorMessage(() => model.forward([tokens[5]!], 9, false));
    const rows = [...await model.forward([tokens[5]!], 5, false), ...await model.forward(tokens.slice(6), 6, true)];
    expectRowsWithin(rows, (await referenceFor(modelDir, tokens)).slice(5), TOLERANCE.f32);
  });
});
