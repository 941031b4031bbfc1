/**
 * Every config the reader accepts renders, on both targets: the checks added in front of rendering
 * (buildPlan re-reading the ModelConfig, checkPlan, strict {{#if}}/{{#each}}) must never refuse a plan
 * that buildPlan made, whatever the config (windows, lists with full layers, MoE, tied embeddings,
 * head_dim absent), dtype, TP size or chunk; and a plan that went through JSON renders the same bytes.
 * A config the CUDA limits refuse (compiler/plan/cuda-limits.ts) is refused by buildPlan, not here.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { normalizeParams } from '../../compiler/config/normalize.js';
import { renderCpuSources } from '../../compiler/emit/render.js';
import { renderCudaSources } from '../../compiler/emit/render-cuda.js';
import { PlanError } from '../../compiler/errors.js';
import { buildPlan } from '../../compiler/plan/build-plan.js';
import type { Plan } from '../../compiler/plan/types.js';
import { validParams } from './params-arbitraries.js';
import { fuzzParameters, fuzzTimeout } from './settings.js';

const render = (plan: Plan) => (plan.options.target === 'cpu' ? renderCpuSources(plan) : renderCudaSources(plan));

describe('a plan buildPlan made', () => {
  it('renders for every accepted config, target, dtype, TP size and chunk, and again the same after JSON', () => {
    const options = fc.record({
      target: fc.constantFrom('cpu' as const, 'cuda' as const),
      dtype: fc.constantFrom('f32' as const, 'bf16' as const, 'f16' as const),
      tp: fc.constantFrom(1 as const, 2 as const, 4 as const),
      maxTokens: fc.integer({ min: 1, max: 600 }),
    });
    let rendered = 0;
    fc.assert(fc.property(validParams({ max: 4 }), options, (params, opts) => {
      const model = normalizeParams(params, '/models/fuzz/params.json');
      let plan: Plan;
      try {
        plan = buildPlan(model, opts);
      } catch (err) {
        if (err instanceof PlanError) return;  // a TP size that does not divide, a shape the CUDA kernels cannot take
        throw err;
      }
      const sources = render(plan);
      expect(render(JSON.parse(JSON.stringify(plan)) as Plan).hash).toBe(sources.hash);
      rendered++;
    }), fuzzParameters(300));
    expect(rendered).toBeGreaterThan(50);  // most cases reach the renderer
  }, fuzzTimeout(300, 400));
});
