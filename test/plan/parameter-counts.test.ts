import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadModelConfig } from '../../compiler/config/load.js';
import { buildPlan } from '../../compiler/plan/build-plan.js';
import { planStats } from '../../compiler/plan/stats.js';

const config = (name: string) => loadModelConfig(join(import.meta.dirname, '../../configs/models', name));

/** Published totals (FACTS.md); the plan's counts must be within 0.5%. */
const PUBLISHED: Array<[string, number, number | null]> = [
  ['mistral-7b-v0.1', 7.24e9, null],
  ['mixtral-8x7b', 46.7e9, 12.9e9],
  ['mixtral-8x22b', 141e9, 39e9],
  ['mistral-nemo-12b', 12.2e9, null],
  ['mistral-large-2', 123e9, null],
];

describe('parameter counts from the plan', () => {
  for (const [name, total, active] of PUBLISHED) {
    it(`${name}: ${total / 1e9}B total${active ? `, ${active / 1e9}B active` : ''} within 0.5%`, () => {
      const s = planStats(buildPlan(config(name)));
      expect(Math.abs(s.params_total / total - 1)).toBeLessThan(0.005);
      expect(Math.abs(s.params_active / (active ?? total) - 1)).toBeLessThan(0.005);
    });
  }

  it('weight bytes per rank add up to the whole model plus replicated tensors', () => {
    const plan = buildPlan(config('mixtral-8x7b'), { tp: 4, dtype: 'bf16' });
    const s = planStats(plan);
    const sum = s.weight_bytes_per_rank.reduce((a, b) => a + b, 0);
    expect(sum).toBeGreaterThanOrEqual(s.params_total * 2);
    expect(sum).toBeLessThan(s.params_total * 2 * 1.01);
  });

  it('a sliding window bounds the KV cache: Mistral 7B v0.1 holds window + chunk - 1 positions per layer at any context', () => {
    const plan = buildPlan(loadModelConfig(join(import.meta.dirname, '../../configs/models/mistral-7b-v0.1'), { maxSeqLen: 32768 }), { dtype: 'bf16', maxTokens: 512 });
    const s = planStats(plan);
    const slots = 4096 + 512 - 1;
    expect(s.kv_bytes_per_token).toBe(32 * 2 * 8 * 128 * 2);
    expect(s.kv_bytes_at_max_context).toBe(slots * s.kv_bytes_per_token);
    expect(s.kv_bytes_at_max_context_without_window).toBe(32768 * s.kv_bytes_per_token);
    expect(plan.kv_cache.layers.every((l) => l.kind === 'rolling' && l.length === slots)).toBe(true);
    // Decoding one token at a time needs no slack beyond the window.
    expect(buildPlan(plan.model, { maxTokens: 1 }).kv_cache.layers[0]!.length).toBe(4096);
  });

  it('whether a layer rolls depends on its window and the context, never on the prefill chunk', () => {
    // tiny-dense: window 8, max_seq_len 128. A chunk of 512 once made its ring (8 + 511) "full" at 128
    // slots, which capped positions at 128; a chunk of 1 let them run on.
    for (const maxTokens of [1, 64, 121, 512]) {
      const plan = buildPlan(config('tiny-dense'), { dtype: 'f32', maxTokens });
      expect(plan.kv_cache.layers.map((l) => [l.kind, l.length]), `maxTokens ${maxTokens}`)
        .toEqual(plan.kv_cache.layers.map(() => ['rolling', 8 + Math.min(maxTokens, 128) - 1]));
    }
    // Where a full layer caps positions at max_seq_len (tiny-window-list: [full, 6]), no ring needs more slots.
    const mixed = buildPlan(config('tiny-window-list'), { dtype: 'f32', maxTokens: 128 });
    expect(mixed.kv_cache.layers.map((l) => [l.kind, l.length])).toEqual([['full', 128], ['rolling', 128], ['full', 128], ['rolling', 128]]);
    expect(buildPlan(config('tiny-window-list'), { dtype: 'f32', maxTokens: 16 }).kv_cache.layers[1]!.length).toBe(6 + 16 - 1);
    // A window that covers the whole context is full attention: max_seq_len slots, whatever the chunk.
    const wide = buildPlan({ ...config('tiny-dense'), sliding_window: [128, 128] }, { dtype: 'f32', maxTokens: 16 });
    expect(wide.kv_cache.layers.map((l) => [l.kind, l.length])).toEqual([['full', 128], ['full', 128]]);
  });

  it('decode bytes per token count top-k experts, not all of them', () => {
    const dense = planStats(buildPlan(config('mistral-7b-v0.3')), 1);
    const moe = planStats(buildPlan(config('mixtral-8x7b')), 1);
    // Mixtral shares Mistral 7B's attention; its FFN reads 2 experts, each the size of 7B's FFN,
    // plus the gate; v0.3's output matrix has 768 more vocabulary rows.
    const extraExpert = 32 * 3 * 4096 * 14336 * 2;
    const gate = 32 * 8 * 4096 * 2;
    const vocabDiff = 768 * 4096 * 2;
    expect(moe.decode.bytes_per_token_per_rank - dense.decode.bytes_per_token_per_rank).toBe(extraExpert + gate - vocabDiff);
  });
});
