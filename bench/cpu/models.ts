/**
 * The models of the CPU benchmark: a dense Mistral-shaped model of ~0.28 G parameters and a
 * Mixtral-shaped MoE with the same active size (8 experts of half the hidden width, top-2), each in
 * f32 and bf16 weights. Inline params.json contents, so the benchmark needs no shipped config.
 */
import { join } from 'node:path';
import type { ModelConfig } from '../../compiler/config/model.js';
import { normalizeParams } from '../../compiler/config/normalize.js';

export type BenchDtype = 'f32' | 'bf16';

export interface BenchModel {
  /** Directory and table name, e.g. "dense-300m-bf16". */
  name: string;
  kind: 'dense' | 'moe';
  dtype: BenchDtype;
  params: Record<string, unknown>;
  seed: number;
}

const DENSE = {
  dim: 1024, n_layers: 16, head_dim: 64, hidden_dim: 3584, n_heads: 16, n_kv_heads: 4,
  norm_eps: 1e-5, vocab_size: 32000, rope_theta: 1e6,
  // prefill 512 + decode 128 fit; llama.cpp's last row is wrong when tokens fill its context exactly
  max_seq_len: 1024,
};

/** Two experts of 1792 hidden units per token = the dense model's 3584: the same active FFN size. */
const MOE = { ...DENSE, hidden_dim: 1792, moe: { num_experts: 8, num_experts_per_tok: 2 } };

export const BENCH_MODELS: readonly BenchModel[] = (['f32', 'bf16'] as const).flatMap((dtype) => [
  { name: `dense-300m-${dtype}`, kind: 'dense' as const, dtype, params: DENSE, seed: 1 },
  { name: `moe-8x-top2-${dtype}`, kind: 'moe' as const, dtype, params: MOE, seed: 2 },
]);

export function benchConfig(model: BenchModel, dir: string): ModelConfig {
  return normalizeParams(model.params, join(dir, 'params.json'), { name: model.name });
}
