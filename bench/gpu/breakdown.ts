/**
 * (b') Where a decode step's time goes, kernel by kernel, in situ: the benchmark model decoded again
 * with some of its kernels left out (MC_CUDA_DIAG_SKIP, which a CUDA library reads at mc_create;
 * templates/cuda/model.cu.hbs), each variant timed like the decode benchmark. Unlike a profiler,
 * which runs one kernel at a time, this keeps the graph replay, PDL and every boundary between
 * kernels as they are in use; unlike a per-kernel clock, it needs nothing in the kernels. The logits
 * of such a step mean nothing: only its time is used.
 *
 * Reading it: "only X" is X back to back, once a layer (its bytes ÷ its time = the bandwidth X
 * reaches with its boundaries); "without X" against "every kernel" is what X adds to a real step;
 * "nothing" is a token's host round trip and the launch of an empty graph, which every variant pays.
 */
import type { KernelName, Plan } from '../../compiler/plan/types.js';
import type { NativeModelInstance } from '../../runtime/native.js';
import type { DecodeCase } from './cases.js';
import { benchDecode, planNodes, weightBytesPerToken } from './decode.js';

export interface BreakdownVariant {
  label: string;
  /** The kernels left out (MC_CUDA_DIAG_SKIP); every other kernel of the plan runs. */
  skip: KernelName[];
}

/** The plan's kernels in launch order, each once. */
export function planKernels(plan: Plan): KernelName[] {
  return [...new Set(planNodes(plan).map((k) => k.kernel))];
}

/** The variant with every kernel left out: a token's host round trip and an empty graph, which every variant pays. */
export const NOTHING = 'nothing (host round trip, empty graph)';

// The experts' kernels read the routing that these write: alone they would stream no expert at all.
const ROUTING: KernelName[] = ['rmsnorm_moe_gate_topk_softmax', 'moe_group_by_expert'];

/**
 * Every kernel; without the attention; each kernel that streams weights alone (the experts' with
 * their routing, and the routing alone); the attention alone; nothing.
 */
export function breakdownVariants(plan: Plan): BreakdownVariant[] {
  const all = planKernels(plan);
  const only = (label: string, run: KernelName[]): BreakdownVariant => ({ label, skip: all.filter((k) => !run.includes(k)) });
  const variants: BreakdownVariant[] = [{ label: 'every kernel', skip: [] }, { label: 'without attention_gqa_window', skip: ['attention_gqa_window'] }];
  for (const k of all) {
    if (k === 'embedding_lookup' || ROUTING.includes(k)) continue;
    if (k === 'moe_w13_swiglu' || k === 'moe_w2_combine_residual') variants.push(only(`only ${k} (and the routing)`, [...ROUTING, k]));
    else variants.push(only(`only ${k}`, [k]));
  }
  // In decode the gate kernel also groups the token; moe_group_by_expert runs for prefills only.
  if (plan.model.moe !== null) variants.push(only('only the routing (gate, top-k)', ROUTING));
  variants.push({ label: NOTHING, skip: all });
  return variants;
}

/** MC_CUDA_DIAG_SKIP's value for a variant: the names, or "all"; undefined where nothing is left out. */
export function diagSkipValue(plan: Plan, v: BreakdownVariant): string | undefined {
  if (v.skip.length === 0) return undefined;
  return v.skip.length === planKernels(plan).length ? 'all' : v.skip.join(',');
}

export interface BreakdownResult {
  label: string;
  variant: string;
  skip: KernelName[];
  layers: number;
  /** Whether a kernel of every layer ran (else µs a layer means nothing: the output projection alone). */
  perLayer: boolean;
  msPerToken: number;
  msPerTokenRuns: number[];
  /** Weight bytes the kernels that ran read per token (weightBytesPerToken over them). */
  weightBytesPerToken: number;
  /** KV-cache bytes per token: the decode benchmark's, or 0 without the attention. */
  kvBytesPerToken: number;
}

/**
 * Times one variant on a model that was opened while MC_CUDA_DIAG_SKIP held diagSkipValue(v) (the
 * library reads it at mc_create): the decode benchmark's steps and repetitions.
 */
export function benchVariant(c: DecodeCase, plan: Plan, model: NativeModelInstance, v: BreakdownVariant): BreakdownResult {
  const r = benchDecode(c, plan, model);
  const skipped = new Set(v.skip);
  return {
    label: c.label, variant: v.label, skip: v.skip, layers: plan.model.n_layers, perLayer: plan.layers[0]!.kernels.some((k) => !skipped.has(k.kernel)), msPerToken: r.msPerToken, msPerTokenRuns: r.msPerTokenRuns,
    weightBytesPerToken: weightBytesPerToken(plan, skipped), kvBytesPerToken: skipped.has('attention_gqa_window') ? 0 : r.kvBytesPerToken,
  };
}

/**
 * The results as a markdown table: per variant its time a token, and a layer and the bandwidth of
 * the bytes of the kernels that ran (against the copy bandwidth) with the "nothing" variant's time
 * (the host round trip every variant pays) taken off, where the model has one.
 */
export function breakdownTable(results: readonly BreakdownResult[], copyGbs: number | null): string[] {
  const md = ['| decode, batch 1, bf16: kernels that ran | ms/token (range) | µs/layer, less the round trip | weights + KV read/token | GB/s, less the round trip | fraction of copy bandwidth |', '|---|---|---|---|---|---|'];
  for (const r of results) {
    const nothing = results.find((x) => x.label === r.label && x.variant === NOTHING);
    const bytes = r.weightBytesPerToken + r.kvBytesPerToken;
    const ms = r.msPerToken - (nothing !== undefined && nothing !== r ? nothing.msPerToken : 0);
    const gbs = bytes > 0 && ms > 0 ? bytes / (ms * 1e6) : NaN;
    md.push(`| ${r.label}: ${r.variant} | ${r.msPerToken.toFixed(3)} (${Math.min(...r.msPerTokenRuns).toFixed(3)}-${Math.max(...r.msPerTokenRuns).toFixed(3)}) | ${r.perLayer ? (1000 * ms / r.layers).toFixed(1) : 'n/a'} | ` +
      `${(bytes / 1e9).toFixed(3)} GB | ${Number.isNaN(gbs) ? 'n/a' : gbs.toFixed(0)} | ${Number.isNaN(gbs) || copyGbs === null ? 'n/a' : `${(100 * gbs / copyGbs).toFixed(1)}%`} |`);
  }
  md.push('', 'Breakdown: the decode benchmark (same prompt, warm-up and repetitions) with the other kernels left out by MC_CUDA_DIAG_SKIP ' +
    '(their launches are not captured; the logits are meaningless), one model load per variant. "only X": X once a layer, back to back; ' +
    '"without X" against "every kernel": what X adds to a step; "nothing": the host round trip and an empty graph, subtracted from the others\' time for their µs a layer and GB/s.');
  return md;
}
