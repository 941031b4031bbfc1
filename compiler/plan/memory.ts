import type { ModelConfig } from '../config/model.js';
import type { BufferSpec, Dtype, KvCacheLayer, Shape } from './types.js';

export const DTYPE_BYTES: Record<Dtype | 'f32' | 'i32', number> = { bf16: 2, f16: 2, f32: 4, i32: 4 };

/**
 * Whether a layer keeps a ring: it has a sliding window shorter than the context. Decided by the
 * config alone, so that the prefill chunk (maxTokens, a speed setting) never changes how long a
 * sequence may run (all layers rolling: past max_seq_len).
 */
export function isRolling(model: ModelConfig, layer: number): boolean {
  const window = model.sliding_window[layer] ?? null;
  return window !== null && window < model.max_seq_len;
}

/** Whether every layer rolls: then no layer bounds the positions, and a sequence may run past max_seq_len. */
export function allLayersRolling(model: ModelConfig): boolean {
  return model.sliding_window.every((_, layer) => isRolling(model, layer));
}

/**
 * Slots in one layer's KV cache. A layer with sliding window W keeps a ring (slot = position mod
 * length), bounded by the window, not the context. The ring holds W + maxTokens - 1 slots rather
 * than W so that a prefill chunk can write all its keys before attending: the key a chunk
 * overwrites is then older than every query of the chunk can see (W - 1 + maxTokens back). Where
 * every layer rolls that may exceed max_seq_len by less than a chunk; where a full layer caps the
 * positions at max_seq_len, no ring needs more (slot = position then). A full layer holds max_seq_len.
 */
export function kvSlots(model: ModelConfig, layer: number, maxTokens: number): number {
  if (!isRolling(model, layer)) return model.max_seq_len;
  const ring = model.sliding_window[layer]! + maxTokens - 1;
  return allLayersRolling(model) ? ring : Math.min(ring, model.max_seq_len);
}

/** KV cache per rank. Keys (after RoPE) and values are stored in the weight dtype. */
export function kvCachePlan(model: ModelConfig, shape: Shape, dtype: Dtype, maxTokens: number) {
  const perTokenPerLayer = 2 * shape.n_kv_heads * model.head_dim * DTYPE_BYTES[dtype];
  const layers: KvCacheLayer[] = model.sliding_window.map((_, layer) => {
    const length = kvSlots(model, layer, maxTokens);
    return { layer, kind: isRolling(model, layer) ? 'rolling' : 'full', length, bytes: length * perTokenPerLayer };
  });
  return {
    dtype,
    bytes_per_token_full: perTokenPerLayer * model.n_layers,
    layers,
    total_bytes_per_rank: layers.reduce((s, l) => s + l.bytes, 0),
  };
}

/** Activation buffers of one rank for a forward call of up to T = maxTokens tokens. */
export function activationBuffers(model: ModelConfig, shape: Shape, maxTokens: number): BufferSpec[] {
  const T = maxTokens;
  const b = (name: string, dims: number[], dtype: BufferSpec['dtype'], what: string): BufferSpec =>
    ({ name, shape: dims, dtype, bytes: dims.reduce((a, c) => a * c, 1) * DTYPE_BYTES[dtype], what });
  const qDim = shape.n_heads * model.head_dim;
  const buffers: BufferSpec[] = [
    b('tokens', [T], 'i32', 'token ids of this call'),
    b('positions', [T], 'i32', 'absolute position of each token'),
    b('residual', [T, model.dim], 'f32', 'the residual stream, kept in f32'),
    b('q', [T, qDim], 'f32', 'queries of this rank\'s heads, after RoPE'),
    b('attn_out', [T, qDim], 'f32', 'attention output of this rank\'s heads'),
  ];
  if (model.moe === null) {
    buffers.push(b('ffn_hidden', [T, shape.hidden_dim], 'f32', 'SwiGLU output, this rank\'s hidden units'));
  } else {
    const k = model.moe.num_experts_per_tok;
    buffers.push(
      b('normed', [T, model.dim], 'f32', 'ffn_norm output, input of every expert'),
      b('route_expert', [T, k], 'i32', 'chosen experts per token'),
      b('route_weight', [T, k], 'f32', 'softmax weight of each chosen expert'),
      b('expert_offsets', [model.moe.num_experts + 1], 'i32', 'start of each expert\'s rows in expert_rows'),
      b('expert_rows', [T * k], 'i32', '(token * top_k + slot) grouped by expert'),
      b('moe_hidden', [T * k, shape.hidden_dim], 'f32', 'SwiGLU output per (token, slot), grouped by expert'),
    );
  }
  buffers.push(b('logits', [T, shape.vocab_size], 'f32', 'logits of this rank\'s vocabulary slice'));
  return buffers;
}
