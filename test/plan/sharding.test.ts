import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadModelConfig } from '../../compiler/config/load.js';
import { normalizeParams } from '../../compiler/config/normalize.js';
import { PlanError } from '../../compiler/errors.js';
import { buildPlan } from '../../compiler/plan/build-plan.js';
import { checkShardable } from '../../compiler/plan/sharding.js';
import { TP_SIZES, type Plan, type TpSize } from '../../compiler/plan/types.js';

const MODELS = join(import.meta.dirname, '../../configs/models');
const shipped = readdirSync(MODELS).filter((d) => existsSync(join(MODELS, d, 'params.json'))).sort();

/** Every rank's slice of one axis: disjoint and covering [0, n) exactly once. */
function coversOnce(slices: Array<{ start: number; length: number }>, n: number): boolean {
  const sorted = [...slices].sort((a, b) => a.start - b.start);
  let next = 0;
  for (const s of sorted) {
    if (s.start !== next || s.length <= 0) return false;
    next += s.length;
  }
  return next === n;
}

function checkWeightMap(plan: Plan): void {
  const { model } = plan;
  const tp = plan.options.tp;
  for (const w of plan.weights) {
    expect(w.slices.map((s) => s.rank)).toEqual(Array.from({ length: tp }, (_, r) => r));
    switch (w.split) {
      case 'replicate':
        expect(w.slices.every((s) => s.axis === null)).toBe(true);
        break;
      case 'column':
      case 'vocab':
        expect(w.slices.every((s) => s.axis === 0)).toBe(true);
        expect(coversOnce(w.slices, w.shape[0]!)).toBe(true);
        break;
      case 'row':
        expect(w.slices.every((s) => s.axis === 1)).toBe(true);
        expect(coversOnce(w.slices, w.shape[1]!)).toBe(true);
        break;
      case 'kv_heads': {
        const group = model.n_heads / model.n_kv_heads;
        const qPerRank = model.n_heads / tp;
        for (const s of w.slices) {
          // Every query head of the rank finds its KV head inside the rank's slice.
          for (let h = s.rank * qPerRank; h < (s.rank + 1) * qPerRank; h++) {
            const row = Math.floor(h / group) * model.head_dim;
            expect(row >= s.start && row + model.head_dim <= s.start + s.length).toBe(true);
          }
        }
        if (model.n_kv_heads >= tp) expect(coversOnce(w.slices, w.shape[0]!)).toBe(true);
        else {
          // Replicated: each KV head is held by exactly tp / n_kv_heads ranks.
          for (let kv = 0; kv < model.n_kv_heads; kv++) {
            expect(w.slices.filter((s) => s.start === kv * model.head_dim).length).toBe(tp / model.n_kv_heads);
          }
        }
        break;
      }
    }
  }
}

describe('tensor-parallel sharding of every shipped config', () => {
  it('ships the configs the issue names', () => {
    for (const name of ['mistral-7b-v0.1', 'mistral-7b-v0.3', 'mixtral-8x7b', 'mixtral-8x22b', 'mistral-nemo-12b', 'codestral-22b', 'mistral-small-24b', 'mistral-large-2', 'ministral-8b']) {
      expect(shipped).toContain(name);
    }
  });

  for (const name of shipped) {
    for (const tp of TP_SIZES) {
      it(`${name} at --tp ${tp}: shards cover every weight once, or replicate it where the plan says`, () => {
        const model = loadModelConfig(join(MODELS, name));
        let shardable = true;
        try {
          checkShardable(model, tp);
        } catch (e) {
          expect(e).toBeInstanceOf(PlanError);
          shardable = false;
        }
        if (!shardable) {
          expect(name.startsWith('tiny-')).toBe(true); // every real Mistral config shards at 1/2/4/8
          return;
        }
        const plan = buildPlan(model, { tp });
        expect(plan.weights.length).toBeGreaterThan(0);
        checkWeightMap(plan);
      });
    }
  }

  it('replicates KV heads when n_kv_heads < TP: Mistral 7B at --tp 16 is refused, at --tp 8 each KV head sits on one rank', () => {
    const plan = buildPlan(loadModelConfig(join(MODELS, 'mistral-7b-v0.3')), { tp: 8 });
    expect(plan.rank_shape.n_kv_heads).toBe(1);
    expect(plan.rank_shape.kv_head_start).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });

  it('one KV head over four ranks: every rank holds a copy', () => {
    const model = normalizeParams({ dim: 64, n_layers: 1, head_dim: 16, hidden_dim: 128, n_heads: 4, n_kv_heads: 1, norm_eps: 1e-5, vocab_size: 512, rope_theta: 1e6 }, 'kv1.json');
    const plan = buildPlan(model, { tp: 4 });
    const wk = plan.weights.find((w) => w.name === 'layers.0.attention.wk.weight')!;
    expect(wk.slices.map((s) => [s.start, s.length])).toEqual([[0, 16], [0, 16], [0, 16], [0, 16]]);
    checkWeightMap(plan);
  });

  it('puts an all-reduce after wo, w2 and the embedding, and gathers the vocabulary slices of the logits', () => {
    const plan = buildPlan(loadModelConfig(join(MODELS, 'mixtral-8x7b')), { tp: 2 });
    const collectives = [...plan.prologue, ...plan.layers[0]!.kernels, ...plan.epilogue].map((k) => [k.kernel, k.collective]);
    expect(collectives.filter(([, c]) => c !== null)).toEqual([
      ['embedding_lookup', 'all_reduce_sum'], ['wo_residual', 'all_reduce_sum'], ['moe_w2_combine_residual', 'all_reduce_sum'], ['rmsnorm_output', 'all_gather_vocab'],
    ]);
    expect(plan.sharding.moe_strategy).toBe('within_expert');
    expect(buildPlan(loadModelConfig(join(MODELS, 'mixtral-8x7b')), { tp: 1 }).layers[0]!.kernels.every((k) => k.collective === null)).toBe(true);
  });

  const base = { dim: 64, n_layers: 1, head_dim: 16, hidden_dim: 128, n_heads: 4, n_kv_heads: 2, norm_eps: 1e-5, vocab_size: 512, rope_theta: 1e6 };
  const UNSHARDABLE: Array<[string, Record<string, number>, TpSize, string]> = [
    ['query heads', { n_heads: 6, n_kv_heads: 2 }, 4, 'n_heads'],
    ['KV heads neither dividing nor divided by TP', { n_heads: 12, n_kv_heads: 3 }, 4, 'n_kv_heads'],
    ['hidden units', { hidden_dim: 130 }, 4, 'hidden_dim'],
    ['vocabulary', { vocab_size: 510 }, 4, 'vocab_size'],
  ];
  for (const [what, change, tp, field] of UNSHARDABLE) {
    it(`refuses --tp ${tp} when the ${what} do not shard, naming ${field}`, () => {
      const model = normalizeParams({ ...base, ...change }, '/m/params.json');
      expect(() => buildPlan(model, { tp })).toThrow(PlanError);
      try {
        buildPlan(model, { tp });
      } catch (e) {
        expect((e as PlanError).field).toBe(field);
        expect((e as PlanError).message).toMatch(new RegExp(`^/m/params.json: ${field}: .*cannot be sharded over --tp ${tp}.*; use --tp \\d$`));
      }
    });
  }

  it('refuses a TP size that is not 1, 2, 4 or 8', () => {
    const model = normalizeParams(base, 'p.json');
    expect(() => buildPlan(model, { tp: 3 as TpSize })).toThrow(/--tp: unsupported tensor-parallel size 3; use one of 1, 2, 4, 8/);
  });
});

describe('plan determinism', () => {
  for (const name of ['mixtral-8x7b', 'ministral-8b', 'tiny-moe']) {
    it(`${name}: the same input gives byte-identical JSON`, () => {
      const a = JSON.stringify(buildPlan(loadModelConfig(join(MODELS, name)), { tp: 2, dtype: 'bf16' }));
      const b = JSON.stringify(buildPlan(loadModelConfig(join(MODELS, name)), { tp: 2, dtype: 'bf16' }));
      expect(a).toBe(b);
      expect(JSON.parse(a)).toEqual(buildPlan(loadModelConfig(join(MODELS, name)), { tp: 2, dtype: 'bf16' }));
    });
  }
});
