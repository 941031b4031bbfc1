import type { ModelConfig } from './model.js';

/**
 * params.json in the official spelling, so the directory looks like a real model to every reader
 * (ours and mistral-inference). Per-layer windows collapse back to an int or the shortest pattern.
 */
export function officialParams(model: ModelConfig): Record<string, unknown> {
  const params: Record<string, unknown> = {
    dim: model.dim,
    n_layers: model.n_layers,
    head_dim: model.head_dim,
    hidden_dim: model.hidden_dim,
    n_heads: model.n_heads,
    n_kv_heads: model.n_kv_heads,
    norm_eps: model.norm_eps,
    vocab_size: model.vocab_size,
    rope_theta: model.rope_theta,
    sliding_window: collapseWindows(model.sliding_window),
  };
  if (model.moe !== null) params.moe = { num_experts: model.moe.num_experts, num_experts_per_tok: model.moe.num_experts_per_tok };
  if (model.tied_embeddings) params.tied_embeddings = true;
  params.max_seq_len = model.max_seq_len;
  return params;
}

/** null (full attention everywhere), one int (same window everywhere), or the shortest repeating list. */
export function collapseWindows(perLayer: ReadonlyArray<number | null>): number | null | Array<number | null> {
  const n = perLayer.length;
  for (let period = 1; period <= n; period++) {
    if (n % period !== 0) continue;
    if (perLayer.every((w, i) => w === perLayer[i % period])) {
      return period === 1 ? (perLayer[0] ?? null) : perLayer.slice(0, period);
    }
  }
  return [...perLayer];
}
