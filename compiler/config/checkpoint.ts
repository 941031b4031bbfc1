import type { ModelConfig } from './model.js';

/** One tensor of Mistral's consolidated.safetensors, as the official checkpoints name and shape it. */
export interface CheckpointTensor {
  name: string;
  /** Row-major shape, as stored in safetensors. */
  shape: number[];
  /** What the tensor is, for initialisation and reports. */
  role: 'embedding' | 'norm' | 'attention' | 'ffn' | 'gate' | 'expert' | 'output';
  /** Layer index, or null for embedding / final norm / output. */
  layer: number | null;
  /** Expert index for MoE expert tensors. */
  expert: number | null;
}

/**
 * Every tensor the checkpoint of `model` holds, in a fixed order (embedding, layers in order,
 * final norm, output). The order is also the order of the weight table handed to compiled code.
 */
export function checkpointTensors(model: ModelConfig): CheckpointTensor[] {
  const { dim, head_dim, n_heads, n_kv_heads, hidden_dim, vocab_size } = model;
  const out: CheckpointTensor[] = [];
  const t = (name: string, shape: number[], role: CheckpointTensor['role'], layer: number | null = null, expert: number | null = null) =>
    out.push({ name, shape, role, layer, expert });
  t('tok_embeddings.weight', [vocab_size, dim], 'embedding');
  for (let i = 0; i < model.n_layers; i++) {
    const l = `layers.${i}`;
    t(`${l}.attention_norm.weight`, [dim], 'norm', i);
    t(`${l}.attention.wq.weight`, [n_heads * head_dim, dim], 'attention', i);
    t(`${l}.attention.wk.weight`, [n_kv_heads * head_dim, dim], 'attention', i);
    t(`${l}.attention.wv.weight`, [n_kv_heads * head_dim, dim], 'attention', i);
    t(`${l}.attention.wo.weight`, [dim, n_heads * head_dim], 'attention', i);
    t(`${l}.ffn_norm.weight`, [dim], 'norm', i);
    if (model.moe === null) {
      t(`${l}.feed_forward.w1.weight`, [hidden_dim, dim], 'ffn', i);
      t(`${l}.feed_forward.w2.weight`, [dim, hidden_dim], 'ffn', i);
      t(`${l}.feed_forward.w3.weight`, [hidden_dim, dim], 'ffn', i);
    } else {
      t(`${l}.feed_forward.gate.weight`, [model.moe.num_experts, dim], 'gate', i);
      for (let j = 0; j < model.moe.num_experts; j++) {
        const e = `${l}.feed_forward.experts.${j}`;
        t(`${e}.w1.weight`, [hidden_dim, dim], 'expert', i, j);
        t(`${e}.w2.weight`, [dim, hidden_dim], 'expert', i, j);
        t(`${e}.w3.weight`, [hidden_dim, dim], 'expert', i, j);
      }
    }
  }
  t('norm.weight', [dim], 'norm');
  if (!model.tied_embeddings) t('output.weight', [vocab_size, dim], 'output');
  return out;
}

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
