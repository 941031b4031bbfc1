import type { CheckpointTensor } from '../config/checkpoint.js';
import type { ModelConfig } from '../config/model.js';
import { PlanError } from '../errors.js';
import type { Shape, ShardSlice, ShardingRule, Split, TpSize, WeightEntry } from './types.js';

/**
 * Tensor-parallel sharding as one rule table (in the manner of gpt-fast's tp.py): query heads and
 * FFN hidden units are split across ranks, the projections that consume them are split by rows of
 * their input, and an all-reduce follows each of those. Nothing else in the compiler branches on TP.
 */
export const SHARDING_RULES: ShardingRule[] = [
  { tensor: 'tok_embeddings.weight', split: 'vocab', why: 'vocabulary-parallel: each rank looks up its rows, an all-reduce sums the one non-zero row' },
  { tensor: 'layers.{i}.attention_norm.weight', split: 'replicate', why: 'every rank normalizes the full residual' },
  { tensor: 'layers.{i}.attention.wq.weight', split: 'column', why: 'query heads split across ranks' },
  { tensor: 'layers.{i}.attention.wk.weight', split: 'kv_heads', why: 'KV heads split across ranks; when n_kv_heads < TP each KV head is replicated on the ranks whose query heads use it' },
  { tensor: 'layers.{i}.attention.wv.weight', split: 'kv_heads', why: 'as wk' },
  { tensor: 'layers.{i}.attention.wo.weight', split: 'row', why: 'consumes this rank\'s heads; partial sums all-reduced' },
  { tensor: 'layers.{i}.ffn_norm.weight', split: 'replicate', why: 'every rank normalizes the full residual' },
  { tensor: 'layers.{i}.feed_forward.w1.weight', split: 'column', why: 'hidden units split across ranks' },
  { tensor: 'layers.{i}.feed_forward.w3.weight', split: 'column', why: 'same hidden units as w1, so SwiGLU stays rank-local' },
  { tensor: 'layers.{i}.feed_forward.w2.weight', split: 'row', why: 'consumes this rank\'s hidden units; partial sums all-reduced' },
  { tensor: 'layers.{i}.feed_forward.gate.weight', split: 'replicate', why: 'tiny; every rank routes identically, so no routing exchange is needed' },
  { tensor: 'layers.{i}.feed_forward.experts.{j}.w1.weight', split: 'column', why: 'each expert\'s hidden units split across ranks (within-expert)' },
  { tensor: 'layers.{i}.feed_forward.experts.{j}.w3.weight', split: 'column', why: 'as w1' },
  { tensor: 'layers.{i}.feed_forward.experts.{j}.w2.weight', split: 'row', why: 'partial sums of all chosen experts all-reduced once' },
  { tensor: 'norm.weight', split: 'replicate', why: 'every rank normalizes the full residual' },
  { tensor: 'output.weight', split: 'vocab', why: 'vocabulary-parallel output; logits gathered' },
];

export const MOE_WHY =
  'experts are split inside each expert (every rank holds 1/TP of every expert\'s hidden units): at batch 1 only top-k experts are read, ' +
  'and spreading whole experts over ranks would leave all but k ranks idle and need a token exchange; within-expert splitting keeps ' +
  'every rank streaming 1/TP of the active weights and needs the same single all-reduce as a dense FFN';

function ruleFor(name: string): ShardingRule {
  const pattern = name.replace(/^layers\.\d+\./, 'layers.{i}.').replace(/\.experts\.\d+\./, '.experts.{j}.');
  const rule = SHARDING_RULES.find((r) => r.tensor === pattern);
  if (rule === undefined) throw new Error(`internal: no sharding rule for tensor ${name}`);
  return rule;
}

/** Checks that `model` shards at `tp`, naming the params.json field that prevents it. */
export function checkShardable(model: ModelConfig, tp: TpSize): void {
  const fail = (field: string, value: number, why: string, fix: string): never => {
    throw new PlanError(model.source, field, `${field} = ${value} cannot be sharded over --tp ${tp}: ${why}`, fix);
  };
  const smaller = (n: number) => [1, 2, 4, 8].filter((t) => t <= tp && n % t === 0).pop() ?? 1;
  if (model.n_heads % tp !== 0) fail('n_heads', model.n_heads, 'query heads must divide evenly', `use --tp ${smaller(model.n_heads)}`);
  if (model.n_kv_heads % tp !== 0 && tp % model.n_kv_heads !== 0) {
    fail('n_kv_heads', model.n_kv_heads, 'KV heads must divide evenly, or divide the TP size so each can be replicated', `use --tp ${smaller(model.n_kv_heads)}`);
  }
  if (model.hidden_dim % tp !== 0) fail('hidden_dim', model.hidden_dim, 'FFN hidden units must divide evenly', `use --tp ${smaller(model.hidden_dim)}`);
  if (model.vocab_size % tp !== 0) fail('vocab_size', model.vocab_size, 'the vocabulary-parallel embedding and output need equal slices', `use --tp ${smaller(model.vocab_size)}`);
}

/** Per-rank shapes after sharding. */
export function rankShape(model: ModelConfig, tp: TpSize): Shape {
  checkShardable(model, tp);
  const n_kv_heads = Math.max(1, model.n_kv_heads / tp);
  const ranks = Array.from({ length: tp }, (_, r) => r);
  return {
    n_heads: model.n_heads / tp,
    n_kv_heads,
    hidden_dim: model.hidden_dim / tp,
    vocab_size: model.vocab_size / tp,
    kv_head_start: ranks.map((r) => kvHeadStart(model, tp, r)),
    vocab_start: ranks.map((r) => (r * model.vocab_size) / tp),
  };
}

/** First KV head used by rank r: the KV head of its first query head. */
function kvHeadStart(model: ModelConfig, tp: TpSize, rank: number): number {
  const firstQueryHead = rank * (model.n_heads / tp);
  return Math.floor(firstQueryHead / (model.n_heads / model.n_kv_heads));
}

/** The weight map: every checkpoint tensor → the slice each rank loads. */
export function shardWeights(model: ModelConfig, tensors: CheckpointTensor[], tp: TpSize): WeightEntry[] {
  const shape = rankShape(model, tp);
  return tensors.map((t) => {
    const split = ruleFor(t.name).split;
    return { name: t.name, shape: t.shape, split, slices: slicesFor(model, t.shape, split, tp, shape) };
  });
}

function slicesFor(model: ModelConfig, full: number[], split: Split, tp: TpSize, shape: Shape): ShardSlice[] {
  const ranks = Array.from({ length: tp }, (_, r) => r);
  const even = (axis: 0 | 1): ShardSlice[] => {
    const length = full[axis]! / tp;
    return ranks.map((rank) => ({ rank, axis, start: rank * length, length }));
  };
  switch (split) {
    case 'replicate':
      return ranks.map((rank) => ({ rank, axis: null, start: 0, length: full[0]! }));
    case 'column':
    case 'vocab':
      return even(0);
    case 'row':
      return even(1);
    case 'kv_heads': {
      const length = shape.n_kv_heads * model.head_dim;
      return ranks.map((rank) => ({ rank, axis: 0, start: shape.kv_head_start[rank]! * model.head_dim, length }));
    }
  }
}
