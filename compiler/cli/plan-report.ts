import type { DeviceProfile } from '../config/devices.js';
import { planStats } from '../plan/stats.js';
import type { KernelNode, Plan } from '../plan/types.js';
import { formatBytes, formatCount, table } from './format.js';

/** The human-readable report of `mistral-compile plan`. */
export function planReport(plan: Plan, device: DeviceProfile, context?: number): string {
  const { model, options } = plan;
  const s = planStats(plan, context);
  const out: string[] = [];
  const windows = [...new Set(model.sliding_window.map((w) => (w === null ? 'full' : String(w))))];
  const pattern = shortestPattern(model.sliding_window.map((w) => w ?? 'full'));
  out.push(`${plan.key}  (${model.source})`);
  out.push(`model: dim ${model.dim} · ${model.n_layers} layers · ${model.n_heads} query / ${model.n_kv_heads} KV heads · head_dim ${model.head_dim}` +
    ` · hidden ${model.hidden_dim} · vocab ${model.vocab_size} · rope_theta ${model.rope_theta}` +
    ` · window ${windows.length === 1 ? windows[0] : `per layer [${pattern.join(', ')}] ×${model.n_layers / pattern.length}`}` +
    (model.moe ? ` · MoE top-${model.moe.num_experts_per_tok} of ${model.moe.num_experts}` : ''));
  for (const note of model.notes) out.push(`note: ${note}`);
  out.push(`parameters: ${formatCount(s.params_total)} total, ${formatCount(s.params_active)} active per token`);
  out.push('');
  out.push('kernels:');
  const kernelRows = (section: string, nodes: KernelNode[]) =>
    nodes.map((k, i) => [i === 0 ? section : '', k.kernel, k.fuses.join(' → ') + (k.collective ? `  ⇒ ${k.collective.replace(/_/g, '-')}` : '')]);
  out.push(table([
    ...kernelRows('once', plan.prologue),
    ...kernelRows(`×${model.n_layers} layers`, plan.layers[0]!.kernels),
    ...kernelRows('once', plan.epilogue),
  ]));
  out.push('');
  out.push(`sharding (--tp ${options.tp}): ${options.tp === 1 ? 'single rank, no collectives' : `${plan.rank_shape.n_heads} query heads, ${plan.rank_shape.n_kv_heads} KV head(s) from ${plan.rank_shape.kv_head_start.join('/')}, ${plan.rank_shape.hidden_dim} hidden units and ${plan.rank_shape.vocab_size} vocabulary rows per rank`}`);
  if (options.tp > 1) {
    out.push(table(plan.sharding.rules.map((r) => [r.tensor, r.split, r.why])));
    if (plan.sharding.moe_why) out.push(`  MoE: ${plan.sharding.moe_why}`);
  }
  out.push('');
  const saving = s.kv_bytes_at_max_context_without_window - s.kv_bytes_at_max_context;
  out.push(`memory per rank (${options.dtype}):`);
  out.push(table([
    ['weights', options.tp === 1 ? formatBytes(s.weight_bytes_per_rank[0]!) : s.weight_bytes_per_rank.map(formatBytes).join(' / ')],
    ['KV cache per token', formatBytes(s.kv_bytes_per_token)],
    [`KV cache at ${model.max_seq_len} tokens`, formatBytes(s.kv_bytes_at_max_context) + (saving > 0 ? ` (rolling windows save ${formatBytes(saving)} of ${formatBytes(s.kv_bytes_at_max_context_without_window)})` : '')],
    [`activations (${options.maxTokens} tokens)`, formatBytes(plan.buffers.reduce((a, b) => a + b.bytes, 0))],
  ]));
  out.push('');
  const bw = device.memory_bandwidth_gbs * 1e9;
  const peak = device.peak_matrix_tflops[options.dtype] * 1e12;
  const bytes = s.decode.bytes_per_token_per_rank;
  out.push(`decode, one token at context ${s.context}, batch 1:`);
  out.push(table([
    ['FLOPs per token', formatCount(s.decode.flops_per_token, 'FLOP')],
    ['bytes read per rank', formatBytes(bytes)],
    [`ceiling on ${device.name}`, `${(bw / bytes).toFixed(1)} tokens/s (bandwidth ${device.memory_bandwidth_gbs} GB/s); compute alone would allow ${(peak * options.tp / s.decode.flops_per_token).toFixed(0)} tokens/s`],
  ]));
  return out.join('\n');
}

/** The shortest prefix that repeats to give `items` (a per-layer window list's pattern). */
function shortestPattern<T>(items: T[]): T[] {
  for (let n = 1; n <= items.length; n++) {
    if (items.length % n === 0 && items.every((x, i) => x === items[i % n])) return items.slice(0, n);
  }
  return items;
}
