/**
 * The compiled model against the float64 reference, end to end: params.json + random
 * consolidated.safetensors → plan → generated C++ → shared library → addon → logits of every
 * position, compared row by row. Every case draws fresh weights (its own seed).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../../runtime/model.js';
import {
  createWorkspace, DENSE_GQA, expectRowsWithin, formatError, positionErrors, referenceFor, tokensFor, TOLERANCE, writeModelDir,
  type ModelSource, type WeightDtype, type Workspace,
} from './helpers.js';

const MOE_TOP2 = { ...DENSE_GQA, moe: { num_experts: 8, num_experts_per_tok: 2 } };

interface Case {
  what: string;
  source: ModelSource;
  dtype: WeightDtype;
  tokens: number;
  /** Prefill chunk (loadModel's maxTokens); small values make one call cross the KV ring. */
  maxTokens?: number;
  /** Expected KV ring length per layer (null: a full cache), checked so the case tests what it says. */
  rings?: Array<number | null>;
}

const CASES: Case[] = [
  { what: 'dense GQA (4 heads, 2 KV heads)', source: { params: DENSE_GQA }, dtype: 'f32', tokens: 24 },
  { what: 'dense GQA (4 heads, 2 KV heads)', source: { params: DENSE_GQA }, dtype: 'bf16', tokens: 24 },
  {
    what: 'a sliding window of 8 over 40 tokens, prefilled in chunks of 6 that cross the ring\'s wrap',
    source: { params: { ...DENSE_GQA, sliding_window: 8 } }, dtype: 'f32', tokens: 40, maxTokens: 6, rings: [13, 13],
  },
  {
    what: 'a sliding window of 8 over 40 tokens in chunks of 6',
    source: { params: { ...DENSE_GQA, sliding_window: 8 } }, dtype: 'bf16', tokens: 40, maxTokens: 6, rings: [13, 13],
  },
  {
    what: 'a per-layer window list [null, 6] repeated over 4 layers, chunks of 5',
    source: { params: { ...DENSE_GQA, n_layers: 4, sliding_window: [null, 6] } }, dtype: 'f32', tokens: 30, maxTokens: 5,
    rings: [null, 10, null, 10],
  },
  { what: 'MoE top-2 of 8 experts', source: { params: MOE_TOP2 }, dtype: 'f32', tokens: 24 },
  { what: 'MoE top-2 of 8 experts', source: { params: MOE_TOP2 }, dtype: 'bf16', tokens: 24 },
  { what: 'MoE top-2 of 8 experts with f16 weights', source: { params: MOE_TOP2 }, dtype: 'f16', tokens: 24 },
  {
    what: 'a sliding window of 8 over 40 tokens with f16 weights',
    source: { params: { ...DENSE_GQA, sliding_window: 8 } }, dtype: 'f16', tokens: 40, maxTokens: 6, rings: [13, 13],
  },
  {
    what: 'MoE top-1 of 4 experts',
    source: { params: { ...DENSE_GQA, moe: { num_experts: 4, num_experts_per_tok: 1 } } }, dtype: 'f32', tokens: 24,
  },
  { what: 'head_dim 24 ≠ dim / n_heads (16)', source: { params: { ...DENSE_GQA, head_dim: 24 } }, dtype: 'f32', tokens: 24 },
  { what: 'one KV head shared by all 4 query heads', source: { params: { ...DENSE_GQA, n_kv_heads: 1 } }, dtype: 'f32', tokens: 24 },
  { what: 'tied embeddings (no output.weight)', source: { params: { ...DENSE_GQA, tied_embeddings: true } }, dtype: 'f32', tokens: 24 },
  {
    what: 'the shipped tiny-moe-top1 config (window 16, MoE top-1) over 40 tokens in chunks of 8',
    source: { shipped: 'tiny-moe-top1' }, dtype: 'bf16', tokens: 40, maxTokens: 8, rings: [23, 23],
  },
];

let ws: Workspace;
beforeAll(async () => {
  ws = await createWorkspace('logits');
});
afterAll(async () => {
  await ws?.remove();
});

describe('compiled logits equal the float64 reference at every position', () => {
  CASES.forEach((c, i) => {
    const tolerance = TOLERANCE[c.dtype];
    it(`for ${c.what}, ${c.dtype} weights: relative L2 ≤ ${tolerance.toExponential(0)}`, async (ctx) => {
      const modelDir = await writeModelDir(ws.root, `case-${i}`, c.source, { seed: 100 + i, dtype: c.dtype });
      const tokens = tokensFor(modelDir, c.tokens, 200 + i);
      const model = await loadModel(modelDir.dir, { cacheDir: ws.cacheDir, maxTokens: c.maxTokens });
      try {
        if (c.rings !== undefined) {
          expect(model.plan.kv_cache.layers.map((l) => (l.kind === 'rolling' ? l.length : null))).toEqual(c.rings);
        }
        const actual = await model.logits(tokens);
        const worst = expectRowsWithin(actual, await referenceFor(modelDir, tokens), tolerance);
        ctx.annotate(`max relative L2 ${formatError(worst)}`);
      } finally {
        model.close();
      }
    });
  });
});

describe('the comparison has teeth', () => {
  it('a sliding window changes the logits: full-attention reference logits are far outside the tolerance', async () => {
    const modelDir = await writeModelDir(ws.root, 'teeth-window', { params: { ...DENSE_GQA, sliding_window: 8 } }, { seed: 150, dtype: 'f32' });
    const tokens = tokensFor(modelDir, 24, 250);
    const fullAttention = { ...modelDir, config: { ...modelDir.config, sliding_window: modelDir.config.sliding_window.map(() => null) } };
    const model = await loadModel(modelDir.dir, { cacheDir: ws.cacheDir });
    try {
      const actual = await model.logits(tokens);
      const wrong = await referenceFor(fullAttention, tokens);
      expect(positionErrors(actual.slice(0, 8), wrong.slice(0, 8)).every((e) => e <= TOLERANCE.f32)).toBe(true); // the window holds everything
      expect(Math.min(...positionErrors(actual.slice(12), wrong.slice(12)))).toBeGreaterThan(100 * TOLERANCE.f32);
    } finally {
      model.close();
    }
  });
});
