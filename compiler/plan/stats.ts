import { elementCount } from '../config/checkpoint.js';
import { DTYPE_BYTES } from './memory.js';
import type { Plan } from './types.js';

/**
 * Figures derived from a plan: parameter counts, memory, and the cost of one decoded token.
 * Decode at batch 1 reads every active weight once per token, so bytes / bandwidth is its floor.
 */
export interface PlanStats {
  params_total: number;
  /** Parameters used per token (top-k experts instead of all; embeddings count in full). */
  params_active: number;
  weight_bytes_per_rank: number[];
  kv_bytes_per_token: number;
  kv_bytes_at_max_context: number;
  /** What the KV cache would take at max context without rolling buffers. */
  kv_bytes_at_max_context_without_window: number;
  context: number;
  decode: {
    /** Matrix FLOPs plus attention FLOPs for one token at `context`. */
    flops_per_token: number;
    /** Bytes one rank reads per decoded token: active weights of its shard + its KV cache at `context`. */
    bytes_per_token_per_rank: number;
  };
}

const isExpert = (name: string) => name.includes('.experts.');

export function planStats(plan: Plan, context = Math.min(4096, plan.model.max_seq_len)): PlanStats {
  const { model, options } = plan;
  const wb = DTYPE_BYTES[options.dtype];
  const topkFraction = model.moe === null ? 1 : model.moe.num_experts_per_tok / model.moe.num_experts;

  let params_total = 0;
  let params_active = 0;
  for (const w of plan.weights) {
    const n = elementCount(w.shape);
    params_total += n;
    params_active += isExpert(w.name) ? n * topkFraction : n;
  }
  const weight_bytes_per_rank = Array.from({ length: options.tp }, (_, rank) =>
    plan.weights.reduce((sum, w) => sum + sliceElements(w, rank) * wb, 0));

  // Bytes read per decoded token on rank 0: each dense matrix once, top-k experts, one embedding row.
  let weightBytesPerToken = 0;
  for (const w of plan.weights) {
    const n = sliceElements(w, 0);
    if (w.name === 'tok_embeddings.weight' && !model.tied_embeddings) weightBytesPerToken += model.dim * wb;
    else weightBytesPerToken += (isExpert(w.name) ? n * topkFraction : n) * wb;
  }
  const perTokenPerLayer = plan.kv_cache.bytes_per_token_full / model.n_layers;
  const kvReadAt = (ctx: number) => model.sliding_window.reduce<number>((s, win) => s + Math.min(ctx, win ?? ctx), 0) * perTokenPerLayer;

  const matmulFlops = 2 * (params_active - model.vocab_size * model.dim * (model.tied_embeddings ? 0 : 1));
  const attnFlops = model.sliding_window.reduce<number>((s, win) => s + 4 * model.n_heads * model.head_dim * Math.min(context, win ?? context), 0);

  return {
    params_total,
    params_active,
    weight_bytes_per_rank,
    kv_bytes_per_token: plan.kv_cache.bytes_per_token_full,
    kv_bytes_at_max_context: plan.kv_cache.total_bytes_per_rank,
    kv_bytes_at_max_context_without_window: plan.kv_cache.bytes_per_token_full * model.max_seq_len,
    context,
    decode: {
      flops_per_token: matmulFlops + attnFlops,
      bytes_per_token_per_rank: weightBytesPerToken + kvReadAt(context) + perTokenPerLayer * model.n_layers,
    },
  };
}

function sliceElements(w: Plan['weights'][number], rank: number): number {
  const s = w.slices[rank]!;
  if (s.axis === null) return elementCount(w.shape);
  const other = w.shape.length === 1 ? 1 : w.shape[s.axis === 0 ? 1 : 0]!;
  return s.length * other;
}
