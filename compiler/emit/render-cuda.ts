import { join } from 'node:path';
import { elementCount } from '../config/checkpoint.js';
import { cudaSharedMemoryNeeded } from '../plan/cuda-limits.js';
import { DTYPE_BYTES } from '../plan/memory.js';
import type { Plan } from '../plan/types.js';
import { withTypedModule, type RenderOptions, type RenderedSources } from './render.js';
import { compileTemplate, rankSliceShape, renderKernels, staticFiles, templateEngine, driverContext } from './templates.js';
import { checkPlan } from '../plan/check-plan.js';

/**
 * Renders the CUDA sources of a plan: one header per fused kernel (templates/cuda/<kernel>.cuh.hbs)
 * and the driver model.cu (the C ABI of runtime/abi/mc_abi.h). Pure: the same plan gives
 * byte-identical files, with no paths or dates in them (generated/ holds two of them in git).
 */

/** Each group of weights starts on a 256-byte boundary (cudaMalloc's alignment). */
const GROUP_ALIGN = 256;

/** Where one checkpoint tensor (this rank's slice) lives in the device weight arena. */
export interface DeviceWeight {
  name: string;
  rows: number;
  cols: number;
  /** Byte offset in the arena. */
  offset: number;
}

/**
 * The device weight arena: every weight of the plan at a fixed offset, laid out so that the fused
 * kernels read one matrix where the checkpoint has several — wq|wk|wv back to back form the QKV
 * matrix, w1|w3 the SwiGLU pair, and each MoE layer's experts are stacked [expert][w1|w3] and
 * [expert][w2] with one stride. Decided here, at compile time, so generated code shows it.
 */
export interface DeviceLayout {
  weights: DeviceWeight[];
  bytes: number;
}

export function deviceLayout(plan: Plan): DeviceLayout {
  const elt = DTYPE_BYTES[plan.options.dtype];
  const byName = new Map(plan.weights.map((w) => [w.name, rankSliceShape(w)] as const));
  const placed = new Map<string, DeviceWeight>();
  let offset = 0;
  /** Places the named weights back to back, the first on a group boundary. */
  const group = (...names: string[]) => {
    offset = Math.ceil(offset / GROUP_ALIGN) * GROUP_ALIGN;
    for (const name of names) {
      const w = byName.get(name);
      if (w === undefined) throw new Error(`internal: plan has no weight ${name}`);
      placed.set(name, { ...w, offset });
      offset += elementCount([w.rows, w.cols]) * elt;
    }
  };
  const { model } = plan;
  group('tok_embeddings.weight');
  for (let i = 0; i < model.n_layers; i++) {
    const l = `layers.${i}`;
    group(`${l}.attention_norm.weight`);
    group(`${l}.attention.wq.weight`, `${l}.attention.wk.weight`, `${l}.attention.wv.weight`);
    group(`${l}.attention.wo.weight`);
    group(`${l}.ffn_norm.weight`);
    if (model.moe === null) {
      group(`${l}.feed_forward.w1.weight`, `${l}.feed_forward.w3.weight`);
      group(`${l}.feed_forward.w2.weight`);
    } else {
      const experts = Array.from({ length: model.moe.num_experts }, (_, j) => `${l}.feed_forward.experts.${j}`);
      group(`${l}.feed_forward.gate.weight`);
      group(...experts.flatMap((e) => [`${e}.w1.weight`, `${e}.w3.weight`]));
      group(...experts.map((e) => `${e}.w2.weight`));
    }
  }
  group('norm.weight');
  if (!model.tied_embeddings) group('output.weight');
  if (placed.size !== plan.weights.length) throw new Error(`internal: device layout placed ${placed.size} of ${plan.weights.length} weights`);
  return { weights: plan.weights.map((w) => placed.get(w.name)!), bytes: Math.ceil(offset / GROUP_ALIGN) * GROUP_ALIGN };
}

/** Renders the CUDA sources of a plan (target cuda). */
export function renderCudaSources(plan: Plan, options: RenderOptions = {}): RenderedSources {
  if (plan.options.target !== 'cuda') throw new Error(`internal: renderCudaSources called for target ${plan.options.target}`);
  checkPlan(plan);
  const { hb, dir } = templateEngine('cuda');
  const { model } = plan;
  const files = renderKernels(plan, hb, dir, '.cuh');

  const layout = deviceLayout(plan);
  const at = (name: string): number => {
    const w = layout.weights.find((d) => d.name === name);
    if (w === undefined) throw new Error(`internal: plan has no weight ${name}`);
    return w.offset;
  };
  const elt = DTYPE_BYTES[plan.options.dtype];
  const kvRowBytes = plan.rank_shape.n_kv_heads * model.head_dim * elt;
  let kvOffset = 0;
  const layers = plan.layers.map((l) => {
    const p = `layers.${l.layer}`;
    const attention = l.kernels.find((k) => k.kernel === 'rmsnorm_qkv_rope_cache')!;
    const kvSlots = attention.constants.kv_cache_length!;
    const off: Record<string, number> = {
      attention_norm: at(`${p}.attention_norm.weight`), wqkv: at(`${p}.attention.wq.weight`), wo: at(`${p}.attention.wo.weight`),
      ffn_norm: at(`${p}.ffn_norm.weight`),
    };
    if (model.moe) {
      Object.assign(off, { gate: at(`${p}.feed_forward.gate.weight`), w13: at(`${p}.feed_forward.experts.0.w1.weight`), w2: at(`${p}.feed_forward.experts.0.w2.weight`) });
    } else {
      Object.assign(off, { w13: at(`${p}.feed_forward.w1.weight`), w2: at(`${p}.feed_forward.w2.weight`) });
    }
    // Keys and values of a layer: [kv_slots, n_kv_heads * head_dim] each, 256-byte aligned.
    const kv = { k: kvOffset, v: kvOffset + align(kvSlots * kvRowBytes) };
    kvOffset = kv.v + align(kvSlots * kvRowBytes);
    return { layer: l.layer, window: l.window, window_or_zero: l.window ?? 0, kv_slots: kvSlots, off, kv };
  });
  // A dense model on one rank may chain each layer's decode GEMVs in one kernel (MC_CUDA_DECODE=chain,
  // mc::gemv_chain): wo, w1|w3, w2 and the next layer's wq|wk|wv, whose KV ring it writes. With
  // TP > 1 an all-reduce sits between them; MoE layers route between theirs.
  const decodeChain = model.moe === null && plan.options.tp === 1;
  // MC_CUDA_DECODE=layer puts the decode attention and its combine in front of the chain (a layer one
  // kernel): a chain's block has 8 warps, one a query head of the KV group (mc::DecodeAttentionPhase).
  const decodeLayer = decodeChain && model.n_heads / model.n_kv_heads <= 8;
  const chained = layers.map((l, i) => ({ ...l, next_kv_slots: i + 1 < layers.length ? layers[i + 1]!.kv_slots : null, next_layer: i + 1 < layers.length ? i + 1 : null }));
  // Distinct template instantiations, for prepare() (shared-memory limits are set per instantiation).
  const attentionVariants = uniqueBy(layers.map((l) => ({ window: l.window_or_zero, kv_slots: l.kv_slots })), (v) => `${v.window}/${v.kv_slots}`);
  const qkvVariants = uniqueBy(layers.map((l) => ({ kv_slots: l.kv_slots })), (v) => `${v.kv_slots}`);
  const context = {
    ...driverContext(plan, files, layers.map((l) => l.kv_slots)),
    weights: layout.weights,
    arena_bytes: layout.bytes,
    kv_bytes: kvOffset,
    layers: chained,
    attention_variants: attentionVariants,
    qkv_variants: qkvVariants,
    decode_chain: decodeChain,
    // one chain type per next layer's KV ring length, and the last layer's (no next layer)
    chain_variants: decodeChain ? uniqueBy(chained.map((l) => ({ next_kv_slots: l.next_kv_slots })), (v) => `${v.next_kv_slots}`) : [],
    decode_layer: decodeLayer,
    // one layer chain type per (window, KV ring, next layer's KV ring)
    layer_variants: decodeLayer
      ? uniqueBy(chained.map((l) => ({ window: l.window_or_zero, kv_slots: l.kv_slots, next_kv_slots: l.next_kv_slots })), (v) => `${v.window}/${v.kv_slots}/${v.next_kv_slots}`)
      : [],
    final_norm_offset: at('norm.weight'),
    output_offset: at(model.tied_embeddings ? 'tok_embeddings.weight' : 'output.weight'),
    embedding_offset: at('tok_embeddings.weight'),
    smem_needed: cudaSharedMemoryNeeded(model, plan.rank_shape, plan.options.dtype),
  };
  files.push({ path: 'model.cu', content: compileTemplate(hb, join(dir, 'model.cu.hbs'))(context) }, ...staticFiles('mc_cuda.cuh', 'mc_cuda_base.cuh', 'mc_device.cuh', 'mc_gemv.cuh', 'mc_gemm.cuh', 'mc_gemm_wgmma.cuh', 'mc_attention.cuh', 'mc_ptx.cuh', 'mc_nccl.hpp', 'mc_entry.hpp'));
  return withTypedModule(plan, files, options);
}

function align(bytes: number): number {
  return Math.ceil(bytes / GROUP_ALIGN) * GROUP_ALIGN;
}

function uniqueBy<T>(items: T[], key: (item: T) => string): T[] {
  const seen = new Map<string, T>();
  for (const item of items) if (!seen.has(key(item))) seen.set(key(item), item);
  return [...seen.values()];
}
