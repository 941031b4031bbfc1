/**
 * (b') Prefill speed on the decode benchmark's models (the same loaded weights), as a fraction of
 * the matrix-throughput limit. A prefill of P tokens reads each weight once for P tokens, so at
 * P in the hundreds it is bound by tensor-core throughput, not by memory: the limit is a dense bf16
 * GEMM (torch.matmul, cuBLAS) measured in the same run by matmul_limit.py.
 */
import { join } from 'node:path';
import { execa } from 'execa';
import { packageRoot } from '../../compiler/paths.js';
import type { Plan } from '../../compiler/plan/types.js';
import type { NativeModelInstance } from '../../runtime/native.js';
import { mulberry32, randomTokens } from '../../test/reference/random.js';
import type { DecodeCase } from './cases.js';
import { median } from '../median.js';
import { sliceShape, weightBytesRead } from './decode.js';

export interface PrefillFlops { linear: number; output: number; attention: number; total: number }

/** (query, key) pairs a causal mask with window W (null: none) leaves visible among P tokens from position 0. */
export function visiblePairs(P: number, window: number | null): number {
  let pairs = 0;
  for (let p = 0; p < P; p++) pairs += window === null ? p + 1 : Math.min(p + 1, window);
  return pairs;
}

/**
 * FLOPs of one prefill of P tokens at position 0 that returns the last position's logits (what a
 * generation asks for; mc_forward then runs the output projection for that one row):
 *   linear     2 × P × (elements of every linear weight a token multiplies: wq, wk, wv, wo, w1, w2,
 *              w3, the MoE gate, and of each layer's experts only num_experts_per_tok / num_experts,
 *              the ones a token is routed to); not the embedding (a row lookup) nor the norms;
 *   output     2 × 1 × vocab × dim, the output projection of the last row;
 *   attention  2 × 2 × n_heads × head_dim × pairs, summed over the layers: QKᵀ and PV each take a
 *              multiply-add per head_dim element of every visible (query, key) pair; a query at p sees
 *              keys max(0, p − W + 1)..p under its layer's window W (all of 0..p without one).
 * Softmax, RoPE, RMSNorm and SwiGLU are O(P × dim) elementwise work, < 0.1% of it: left out.
 */
export function prefillFlops(plan: Plan, P: number): PrefillFlops {
  const moe = plan.model.moe;
  let linear = 0;
  let output = 0;
  for (const w of plan.weights) {
    if (w.shape.length !== 2) continue;  // norm vectors
    const { rows, cols } = sliceShape(w);
    const isEmbedding = w.name === 'tok_embeddings.weight';
    if (w.name === 'output.weight' || (isEmbedding && plan.model.tied_embeddings)) output += 2 * rows * cols;
    else if (isEmbedding) continue;
    else if (moe !== null && w.name.includes('.experts.')) linear += (2 * P * rows * cols * moe.num_experts_per_tok) / moe.num_experts;
    else linear += 2 * P * rows * cols;
  }
  const { n_heads } = plan.rank_shape;
  const attention = plan.layers.reduce((sum, l) => sum + 2 * 2 * n_heads * plan.model.head_dim * visiblePairs(P, l.window), 0);
  return { linear, output, attention, total: linear + output + attention };
}

/** Untimed calls before the timed ones (the first one of a length also picks its kernels' tiles). */
export const PREFILL_WARMUP = 2;
export const PREFILL_REPEATS = 5;

export interface PrefillResult {
  label: string;
  key: string;
  tokens: number;
  flops: PrefillFlops;
  /** Median of the timed calls, and every call in order (their spread is the noise). */
  ms: number;
  msRuns: number[];
  tokensPerSecond: number;
  tflops: number;
  /** Weight bytes the call reads at least once (weightBytesRead): with few tokens, its time's floor is these ÷ bandwidth. */
  weightBytes: number;
}

/** Prefill of `tokens` random ids at position 0, one call each, on a model opened by openSynthetic. */
export function benchPrefill(c: DecodeCase, plan: Plan, model: NativeModelInstance, tokens: number): PrefillResult {
  if (tokens > plan.options.maxTokens) throw new Error(`a prefill of ${tokens} tokens needs maxTokens >= ${tokens} (the plan has ${plan.options.maxTokens})`);
  const ids = Int32Array.from(randomTokens(mulberry32(11), tokens, plan.model.vocab_size));
  const once = () => {
    const started = performance.now();
    model.forwardSync(ids, 0, false);  // position 0 starts the sequence over; last row's logits only
    return performance.now() - started;
  };
  for (let i = 0; i < PREFILL_WARMUP; i++) once();
  const msRuns = Array.from({ length: PREFILL_REPEATS }, once);
  const ms = median(msRuns);
  const flops = prefillFlops(plan, tokens);
  return {
    label: c.label, key: plan.key, tokens, flops, ms, msRuns, tokensPerSecond: (1000 * tokens) / ms, tflops: flops.total / (ms * 1e-3) / 1e12,
    weightBytes: weightBytesRead(plan, tokens),
  };
}

export interface MatrixLimit { tflops: number; ms: number; n: number; device: string; torch: string }

/** The dense bf16 GEMM rate of this GPU (matmul_limit.py), or the reason there is none (no python3 or torch). */
export async function matrixLimit(): Promise<MatrixLimit | { error: string }> {
  const run = await execa('python3', [join(packageRoot(), 'bench', 'gpu', 'matmul_limit.py')], { reject: false, all: true, timeout: 300_000 });
  const line = String(run.all ?? '').split('\n').reverse().find((l) => l.startsWith('{'));
  if (run.exitCode !== 0 || line === undefined) {
    const tail = String(run.all ?? run.shortMessage ?? '').split('\n').slice(-3).join(' | ');
    return { error: `exit ${run.exitCode ?? 'none'}: ${tail}` };
  }
  return JSON.parse(line) as MatrixLimit;
}
