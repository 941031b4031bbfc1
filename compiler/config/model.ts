/**
 * The canonical model: what every later stage sees. Aliases, defaults and per-layer expansion are
 * resolved once, in normalize.ts; nothing downstream re-reads params.json.
 */
export interface MoeConfig {
  /** Experts per MoE layer (params.json moe.num_experts). */
  num_experts: number;
  /** Experts each token is routed to (params.json moe.num_experts_per_tok). */
  num_experts_per_tok: number;
}

export interface ModelConfig {
  /** Readable, file-name-safe name ([a-z0-9._-]), from the model directory or file name. */
  name: string;
  /** The params.json this came from, as the user named it, or '<inline>'. */
  source: string;
  dim: number;
  n_layers: number;
  head_dim: number;
  hidden_dim: number;
  n_heads: number;
  n_kv_heads: number;
  norm_eps: number;
  vocab_size: number;
  rope_theta: number;
  /** Sliding window per layer (length n_layers); null means full attention for that layer. */
  sliding_window: Array<number | null>;
  moe: MoeConfig | null;
  /** When true the checkpoint has no output.weight; the output projection reuses tok_embeddings. */
  tied_embeddings: boolean;
  /** Longest context the runtime will hold (KV cache length of full-attention layers). */
  max_seq_len: number;
  max_batch_size: number;
  /** What normalization decided on the user's behalf: defaults chosen, keys ignored. */
  notes: string[];
}
