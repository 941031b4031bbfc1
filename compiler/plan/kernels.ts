import type { ModelConfig } from '../config/model.js';
import { isRolling, kvSlots } from './memory.js';
import type { Collective, KernelNode, LayerPlan, Plan, Shape, TpSize } from './types.js';

/**
 * The fusion pass: the sequence of fused kernels per layer. Each node's name is the template that
 * renders it; its constants are the per-rank shapes the template bakes in.
 */

const reduceIf = (tp: TpSize, c: Collective): Collective | null => (tp > 1 ? c : null);

export function prologueKernels(model: ModelConfig, shape: Shape, tp: TpSize): KernelNode[] {
  return [{
    kernel: 'embedding_lookup',
    fuses: ['token embedding lookup (vocabulary slice of this rank; other rows contribute zero)'],
    weights: ['tok_embeddings.weight'],
    reads: ['tokens'],
    writes: ['residual'],
    constants: { dim: model.dim, vocab_local: shape.vocab_size },
    collective: reduceIf(tp, 'all_reduce_sum'),
  }];
}

export function layerKernels(model: ModelConfig, shape: Shape, tp: TpSize, layer: number, maxTokens: number): LayerPlan {
  const window = model.sliding_window[layer] ?? null;
  const l = `layers.${layer}`;
  const kvLength = kvSlots(model, layer, maxTokens);
  const attention: KernelNode[] = [
    {
      kernel: 'rmsnorm_qkv_rope_cache',
      fuses: ['RMSNorm (attention_norm)', 'fused Q/K/V projection', 'RoPE on interleaved pairs (Q and K)', isRolling(model, layer) ? `K/V write into the rolling KV cache (slot = position mod ${kvLength})` : 'K/V write into the KV cache'],
      weights: [`${l}.attention_norm.weight`, `${l}.attention.wq.weight`, `${l}.attention.wk.weight`, `${l}.attention.wv.weight`],
      reads: ['residual', 'positions'],
      writes: ['q', `kv_cache.${layer}`],
      constants: {
        dim: model.dim, head_dim: model.head_dim, n_heads_local: shape.n_heads, n_kv_heads_local: shape.n_kv_heads,
        kv_cache_length: kvLength,
      },
      collective: null,
    },
    {
      kernel: 'attention_gqa_window',
      fuses: [`grouped-query attention: each KV head read once for its ${shape.n_heads / shape.n_kv_heads} query heads`, window === null ? 'causal mask' : `causal mask with sliding window ${window}`, 'online softmax'],
      weights: [],
      reads: ['q', `kv_cache.${layer}`, 'positions'],
      writes: ['attn_out'],
      constants: {
        head_dim: model.head_dim, n_heads_local: shape.n_heads, n_kv_heads_local: shape.n_kv_heads,
        // Query heads of this rank per KV head of this rank: the model's group, or fewer when
        // KV heads are replicated (n_kv_heads < TP) and a rank holds part of one group.
        group_size: shape.n_heads / shape.n_kv_heads, window: window ?? 0, kv_cache_length: kvLength,
      },
      collective: null,
    },
    {
      kernel: 'wo_residual',
      fuses: ['output projection (wo)', 'residual add'],
      weights: [`${l}.attention.wo.weight`],
      reads: ['attn_out', 'residual'],
      writes: ['residual'],
      constants: { dim: model.dim, in_local: shape.n_heads * model.head_dim },
      collective: reduceIf(tp, 'all_reduce_sum'),
    },
  ];
  return { layer, window, kernels: [...attention, ...(model.moe === null ? denseFfn(model, shape, tp, l) : moeFfn(model, shape, tp, l))] };
}

function denseFfn(model: ModelConfig, shape: Shape, tp: TpSize, l: string): KernelNode[] {
  return [
    {
      kernel: 'rmsnorm_w13_swiglu',
      fuses: ['RMSNorm (ffn_norm)', 'W1 and W3 projections', 'SwiGLU epilogue silu(w1·x) ⊙ (w3·x)'],
      weights: [`${l}.ffn_norm.weight`, `${l}.feed_forward.w1.weight`, `${l}.feed_forward.w3.weight`],
      reads: ['residual'],
      writes: ['ffn_hidden'],
      constants: { dim: model.dim, hidden_local: shape.hidden_dim },
      collective: null,
    },
    {
      kernel: 'w2_residual',
      fuses: ['W2 projection', 'residual add'],
      weights: [`${l}.feed_forward.w2.weight`],
      reads: ['ffn_hidden', 'residual'],
      writes: ['residual'],
      constants: { dim: model.dim, hidden_local: shape.hidden_dim },
      collective: reduceIf(tp, 'all_reduce_sum'),
    },
  ];
}

function moeFfn(model: ModelConfig, shape: Shape, tp: TpSize, l: string): KernelNode[] {
  const moe = model.moe!;
  const experts = Array.from({ length: moe.num_experts }, (_, j) => `${l}.feed_forward.experts.${j}`);
  return [
    {
      kernel: 'rmsnorm_moe_gate_topk_softmax',
      fuses: ['RMSNorm (ffn_norm)', 'gate projection', `top-${moe.num_experts_per_tok} of ${moe.num_experts} experts`, 'softmax over the chosen logits'],
      weights: [`${l}.ffn_norm.weight`, `${l}.feed_forward.gate.weight`],
      reads: ['residual'],
      writes: ['normed', 'route_expert', 'route_weight'],
      constants: { dim: model.dim, num_experts: moe.num_experts, top_k: moe.num_experts_per_tok },
      collective: null,
    },
    {
      kernel: 'moe_group_by_expert',
      fuses: ['counting sort of (token, slot) pairs by expert', 'per-expert offsets'],
      weights: [],
      reads: ['route_expert'],
      writes: ['expert_offsets', 'expert_rows'],
      constants: { num_experts: moe.num_experts, top_k: moe.num_experts_per_tok },
      collective: null,
    },
    {
      kernel: 'moe_w13_swiglu',
      fuses: ['grouped expert W1 and W3 over each expert\'s tokens', 'SwiGLU epilogue'],
      weights: experts.flatMap((e) => [`${e}.w1.weight`, `${e}.w3.weight`]),
      reads: ['normed', 'expert_offsets', 'expert_rows'],
      writes: ['moe_hidden'],
      constants: { dim: model.dim, hidden_local: shape.hidden_dim, num_experts: moe.num_experts, top_k: moe.num_experts_per_tok },
      collective: null,
    },
    {
      kernel: 'moe_w2_combine_residual',
      fuses: ['grouped expert W2', 'scale by routing weight', 'combine the top-k expert outputs', 'residual add'],
      weights: experts.map((e) => `${e}.w2.weight`),
      reads: ['moe_hidden', 'expert_offsets', 'expert_rows', 'route_weight', 'residual'],
      writes: ['residual'],
      constants: { dim: model.dim, hidden_local: shape.hidden_dim, num_experts: moe.num_experts, top_k: moe.num_experts_per_tok },
      collective: reduceIf(tp, 'all_reduce_sum'),
    },
  ];
}

export function epilogueKernels(model: ModelConfig, shape: Shape, tp: TpSize): KernelNode[] {
  return [{
    kernel: 'rmsnorm_output',
    fuses: ['final RMSNorm (norm)', `output projection (${model.tied_embeddings ? 'tied to tok_embeddings' : 'output'}, vocabulary slice of this rank)`],
    weights: ['norm.weight', model.tied_embeddings ? 'tok_embeddings.weight' : 'output.weight'],
    reads: ['residual'],
    writes: ['logits'],
    constants: { dim: model.dim, vocab_local: shape.vocab_size },
    collective: reduceIf(tp, 'all_gather_vocab'),
  }];
}

/** Every kernel node of a plan in launch order: the prologue, each layer's kernels, the epilogue. */
export function kernelNodes(plan: Plan): KernelNode[] {
  return [...plan.prologue, ...plan.layers.flatMap((l) => l.kernels), ...plan.epilogue];
}
