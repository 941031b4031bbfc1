/** buildPlan checks a ModelConfig it did not get from normalizeParams as normalizeParams checks a params.json (compiler/config/check-model.ts). */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadModelConfig } from '../../compiler/config/load.js';
import type { ModelConfig } from '../../compiler/config/model.js';
import { ConfigError } from '../../compiler/errors.js';
import { buildPlan } from '../../compiler/plan/build-plan.js';

const base = loadModelConfig(join(import.meta.dirname, '../../configs/models/tiny-moe'));
const plan = (changes: Record<string, unknown>) => () => buildPlan({ ...base, ...changes } as unknown as ModelConfig);

describe('buildPlan with a config made by hand', () => {
  it('takes what a params.json could say, including changes to it', () => {
    expect(buildPlan({ ...base }).key).toBe(base.name + '.cpu.bf16.tp1');
    expect(buildPlan({ ...base, dim: 128, sliding_window: base.sliding_window.map(() => 16), name: 'other' }).model.dim).toBe(128);
  });

  it('refuses what none could, with normalizeParams\'s own line, or naming the field', () => {
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ norm_eps: 1e-300 }, /norm_eps: .*below the smallest normal float32/],
      [{ dim: '64' }, /dim: .*must be an integer/],
      [{ dim: 2 ** 40 }, /dim: .*out of range/],
      [{ n_kv_heads: 3 }, /n_kv_heads: .*must divide n_heads/],
      [{ name: '../../../tmp/escaped' }, /is not a model name/],
      [{ name: 7 }, /name: is 7, not a string/],
      [{ sliding_window: [16] }, /sliding_window: is \[16\], which no params\.json gives \(it reads as \[16,16\]\)/],
      [{ sliding_window: base.sliding_window.map(() => 0) }, /sliding_window/],
      [{ moe: { num_experts: 4, num_experts_per_tok: 2, extra: 'x' } }, /moe: is .*which no params\.json gives/],
      [{ tied_embeddings: 'yes' }, /tied_embeddings/],
      [{ notes: undefined }, /notes: is missing, not a list of strings/],
    ];
    for (const [changes, message] of cases) {
      expect(plan(changes), JSON.stringify(changes)).toThrow(ConfigError);
      expect(plan(changes), JSON.stringify(changes)).toThrow(message);
    }
    expect(() => buildPlan(null as unknown as ModelConfig)).toThrow(/^model config: is null, not an object/);
  });
});
