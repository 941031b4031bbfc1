import type { ModelConfig } from '../config/model.js';

/**
 * The plan: plain, JSON-serializable data that later stages render without re-deciding anything.
 * `mistral-compile plan --json` prints exactly this object.
 */

export type Dtype = 'bf16' | 'f16' | 'f32';
export type Target = 'cpu' | 'cuda';
export type TpSize = 1 | 2 | 4 | 8;
export const TP_SIZES: readonly TpSize[] = [1, 2, 4, 8];
export const DTYPES: readonly Dtype[] = ['bf16', 'f16', 'f32'];
export const TARGETS: readonly Target[] = ['cpu', 'cuda'];

export interface PlanOptions {
  target: Target;
  dtype: Dtype;
  tp: TpSize;
  /** Most tokens one forward call processes (prefill chunk); sizes the activation buffers. */
  maxTokens: number;
}

/** Names of the fused kernels; each has one template of the same name under templates/. */
export type KernelName =
  | 'embedding_lookup'
  | 'rmsnorm_qkv_rope_cache'
  | 'attention_gqa_window'
  | 'wo_residual'
  | 'rmsnorm_w13_swiglu'
  | 'w2_residual'
  | 'rmsnorm_moe_gate_topk_softmax'
  | 'moe_group_by_expert'
  | 'moe_w13_swiglu'
  | 'moe_w2_combine_residual'
  | 'rmsnorm_output';

/** Collective after a kernel, across the TP ranks (absent at TP 1). */
export type Collective = 'all_reduce_sum' | 'all_gather_vocab';

export interface KernelNode {
  kernel: KernelName;
  /** What the kernel fuses, in order, for people. */
  fuses: string[];
  /** Checkpoint tensors it reads (each rank reads its shard). */
  weights: string[];
  /** Activation buffers read and written (names from Plan.buffers). */
  reads: string[];
  writes: string[];
  /** Compile-time constants for this node, per rank (already divided by TP). */
  constants: Record<string, number>;
  /** Collective that follows, when TP > 1. */
  collective: Collective | null;
}

export interface LayerPlan {
  layer: number;
  /** Sliding window of this layer, or null for full attention. */
  window: number | null;
  kernels: KernelNode[];
}

export type Split = 'replicate' | 'column' | 'row' | 'vocab' | 'kv_heads';

/** The slice of a checkpoint tensor that one rank loads: rows or columns [start, start+length). */
export interface ShardSlice {
  rank: number;
  /** 0 = rows (output features), 1 = columns (input features), null = the whole tensor. */
  axis: 0 | 1 | null;
  start: number;
  length: number;
}

export interface WeightEntry {
  name: string;
  shape: number[];
  split: Split;
  slices: ShardSlice[];
}

export interface ShardingRule {
  /** Tensor name pattern, with {i} for the layer and {j} for the expert. */
  tensor: string;
  split: Split;
  why: string;
}

export interface BufferSpec {
  name: string;
  /** Shape per rank; T = maxTokens. */
  shape: number[];
  dtype: 'f32' | 'i32' | Dtype;
  bytes: number;
  what: string;
}

export interface KvCacheLayer {
  layer: number;
  /** 'rolling': a ring of `length` slots (slot = position mod window); 'full': one slot per position. */
  kind: 'rolling' | 'full';
  length: number;
  /** Bytes per rank for keys and values together. */
  bytes: number;
}

export interface Shape {
  /** Per-rank shapes (already divided by TP). */
  n_heads: number;
  n_kv_heads: number;
  hidden_dim: number;
  vocab_size: number;
  /** First KV head of rank r is kv_head_of_rank[r]; first query head is r * n_heads. */
  kv_head_start: number[];
  vocab_start: number[];
}

export interface Plan {
  format: 'mistral-compile.plan/1';
  /** Specialization key: names build artefacts and cache entries, e.g. mixtral-8x7b.cpu.bf16.tp2. */
  key: string;
  model: ModelConfig;
  options: PlanOptions;
  /** Per-rank shapes. */
  rank_shape: Shape;
  prologue: KernelNode[];
  layers: LayerPlan[];
  epilogue: KernelNode[];
  kv_cache: { dtype: Dtype; bytes_per_token_full: number; layers: KvCacheLayer[]; total_bytes_per_rank: number };
  sharding: { rules: ShardingRule[]; moe_strategy: 'within_expert' | null; moe_why: string | null };
  weights: WeightEntry[];
  buffers: BufferSpec[];
}
