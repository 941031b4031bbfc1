/**
 * The decode breakdown's variants (bench/gpu/breakdown.ts) on the real configs' plans: which kernels
 * each leaves out, the MC_CUDA_DIAG_SKIP value it sets, and the bytes it counts.
 */
import { describe, expect, it } from 'vitest';
import { breakdownTable, breakdownVariants, diagSkipValue, planKernels, type BreakdownResult } from '../../../bench/gpu/breakdown.js';
import { shippedConfig } from '../../../bench/gpu/cases.js';
import { weightBytesPerToken } from '../../../bench/gpu/decode.js';
import { buildPlan } from '../../../compiler/plan/build-plan.js';

const planOf = (config: string) => buildPlan(shippedConfig(config), { target: 'cuda', dtype: 'bf16', tp: 1, maxTokens: 512 });

describe('the decode breakdown', () => {
  it('Mistral-7B: every kernel, without the attention, each kernel alone, nothing', () => {
    const plan = planOf('mistral-7b-v0.1');
    expect(planKernels(plan)).toEqual(['embedding_lookup', 'rmsnorm_qkv_rope_cache', 'attention_gqa_window', 'wo_residual', 'rmsnorm_w13_swiglu', 'w2_residual', 'rmsnorm_output']);
    const variants = breakdownVariants(plan);
    expect(variants.map((v) => v.label)).toEqual(['every kernel', 'without attention_gqa_window', 'only rmsnorm_qkv_rope_cache', 'only attention_gqa_window',
      'only wo_residual', 'only rmsnorm_w13_swiglu', 'only w2_residual', 'only rmsnorm_output', 'nothing (host round trip, empty graph)']);
    expect(variants.map((v) => diagSkipValue(plan, v))).toEqual([undefined, 'attention_gqa_window',
      'embedding_lookup,attention_gqa_window,wo_residual,rmsnorm_w13_swiglu,w2_residual,rmsnorm_output',
      'embedding_lookup,rmsnorm_qkv_rope_cache,wo_residual,rmsnorm_w13_swiglu,w2_residual,rmsnorm_output',
      'embedding_lookup,rmsnorm_qkv_rope_cache,attention_gqa_window,rmsnorm_w13_swiglu,w2_residual,rmsnorm_output',
      'embedding_lookup,rmsnorm_qkv_rope_cache,attention_gqa_window,wo_residual,w2_residual,rmsnorm_output',
      'embedding_lookup,rmsnorm_qkv_rope_cache,attention_gqa_window,wo_residual,rmsnorm_w13_swiglu,rmsnorm_output',
      'embedding_lookup,rmsnorm_qkv_rope_cache,attention_gqa_window,wo_residual,rmsnorm_w13_swiglu,w2_residual', 'all']);
    // The weight-streaming kernels alone add up to every byte but the embedding row.
    const bytes = (label: string) => weightBytesPerToken(plan, new Set(variants.find((v) => v.label === label)!.skip));
    const [qkv, wo, w13, w2, out] = ['only rmsnorm_qkv_rope_cache', 'only wo_residual', 'only rmsnorm_w13_swiglu', 'only w2_residual', 'only rmsnorm_output'].map(bytes) as [number, number, number, number, number];
    expect(qkv).toBe(32 * 2 * (4096 + 6144 * 4096));
    expect(wo).toBe(32 * 2 * 4096 * 4096);
    expect(w13).toBe(32 * 2 * (4096 + 2 * 14336 * 4096));
    expect(w2).toBe(32 * 2 * 4096 * 14336);
    expect(out).toBe(2 * (4096 + 32000 * 4096));
    expect(qkv + wo + w13 + w2 + out + 2 * 4096).toBe(bytes('every kernel'));
    expect(bytes('only attention_gqa_window')).toBe(0);
    expect(bytes('nothing (host round trip, empty graph)')).toBe(0);
  });

  it('Mixtral-8x7B: the experts\' kernels keep their routing, and the routing alone is a variant', () => {
    const plan = planOf('mixtral-8x7b');
    const variants = breakdownVariants(plan);
    const labels = variants.map((v) => v.label);
    expect(labels).toContain('only moe_w13_swiglu (and the routing)');
    expect(labels).toContain('only moe_w2_combine_residual (and the routing)');
    expect(labels.at(-2)).toBe('only the routing (gate, top-k)');
    const w13 = variants.find((v) => v.label === 'only moe_w13_swiglu (and the routing)')!;
    expect(planKernels(plan).filter((k) => !w13.skip.includes(k))).toEqual(['rmsnorm_moe_gate_topk_softmax', 'moe_group_by_expert', 'moe_w13_swiglu']);
    // Two of eight experts a token: a quarter of the experts' w1|w3, and the gate.
    expect(weightBytesPerToken(plan, new Set(w13.skip))).toBeCloseTo(32 * 2 * (4096 + 8 * 4096 + 8 * 2 * 14336 * 4096 / 4), -2);
  });

  it('the table subtracts the host round trip for the bandwidth, and says n/a a layer for the output projection alone', () => {
    const r = (variant: string, ms: number, bytes: number, perLayer = true): BreakdownResult =>
      ({ label: 'M', variant, skip: bytes === 0 ? ['wo_residual'] : [], layers: 32, perLayer, msPerToken: ms, msPerTokenRuns: [ms], weightBytesPerToken: bytes, kvBytesPerToken: 0 });
    const md = breakdownTable([r('every kernel', 4.1, 14e9), r('only rmsnorm_output', 0.2, 0.26e9, false), r('nothing (host round trip, empty graph)', 0.1, 0)], 4000);
    expect(md[2]).toBe('| M: every kernel | 4.100 (4.100-4.100) | 125.0 | 14.000 GB | 3500 | 87.5% |');
    expect(md[3]).toBe('| M: only rmsnorm_output | 0.200 (0.200-0.200) | n/a | 0.260 GB | 2600 | 65.0% |');
    expect(md[4]).toBe('| M: nothing (host round trip, empty graph) | 0.100 (0.100-0.100) | 3.1 | 0.000 GB | n/a | n/a |');
  });
});
