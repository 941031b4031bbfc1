import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import Handlebars from 'handlebars';
import { packageRoot } from '../paths.js';
import type { KernelNode, Plan } from '../plan/types.js';
import { cxxComment, cxxFloat, cxxInt, cxxName } from './safe.js';
import { typedModelModule } from './typed-module.js';

/** One rendered source file, path relative to the output directory. */
export interface SourceFile {
  path: string;
  content: string;
}

export interface RenderedSources {
  files: SourceFile[];
  /** sha256 over every path and content: the build cache key (with the compiler flags). */
  hash: string;
}

const WEIGHT_TYPE = { f32: 'float', bf16: 'mc::bf16', f16: 'mc::f16' } as const;

/** A Handlebars instance whose only way to print a value is a checking helper. */
function templateEngine(dir: string): typeof Handlebars {
  const hb = Handlebars.create();
  hb.registerHelper('int', cxxInt);
  hb.registerHelper('float', cxxFloat);
  hb.registerHelper('name', cxxName);
  const partials = join(dir, 'partials');
  for (const file of readdirSync(partials).sort()) {
    hb.registerPartial(file.replace(/\.hbs$/, ''), readFileSync(join(partials, file), 'utf8'));
  }
  return hb;
}

function compile(hb: typeof Handlebars, file: string) {
  // noEscape: C++ is not HTML. strict: a missing variable is an error, not an empty string.
  return hb.compile(readFileSync(file, 'utf8'), { noEscape: true, strict: true });
}

/** Constants a kernel template sees: its plan node's constants plus model-wide scalars. */
function kernelContext(plan: Plan, node: KernelNode) {
  return {
    ...node.constants,
    kernel: cxxName(node.kernel),
    fuses: node.fuses.map(cxxComment),
    key: cxxName(plan.key),
    norm_eps: plan.model.norm_eps,
  };
}

/** Renders the CPU sources of a plan. Pure: the same plan gives byte-identical files. */
export function renderCpuSources(plan: Plan): RenderedSources {
  if (plan.options.target !== 'cpu') throw new Error(`internal: renderCpuSources called for target ${plan.options.target}`);
  const root = join(packageRoot(), 'templates');
  const dir = join(root, 'cpu');
  const hb = templateEngine(dir);
  const { model } = plan;

  // Each fused kernel is rendered once, from its first plan node: the constants a kernel bakes in
  // are the same in every layer; what varies per layer (window, ring length) is a template argument.
  const firstNodes = new Map<string, KernelNode>();
  for (const node of [...plan.prologue, ...plan.layers.flatMap((l) => l.kernels), ...plan.epilogue]) {
    if (!firstNodes.has(node.kernel)) firstNodes.set(node.kernel, node);
  }
  const files: SourceFile[] = [];
  for (const [kernel, node] of firstNodes) {
    files.push({ path: `kernels/${kernel}.hpp`, content: compile(hb, join(dir, `${kernel}.hpp.hbs`))(kernelContext(plan, node)) });
  }

  const index = new Map(plan.weights.map((w, i) => [w.name, i]));
  const at = (name: string): number => {
    const i = index.get(name);
    if (i === undefined) throw new Error(`internal: plan has no weight ${name}`);
    return i;
  };
  const layers = plan.layers.map((l) => {
    const p = `layers.${l.layer}`;
    const attention = l.kernels.find((k) => k.kernel === 'rmsnorm_qkv_rope_cache')!;
    const w: Record<string, number> = {
      attention_norm: at(`${p}.attention_norm.weight`), wq: at(`${p}.attention.wq.weight`), wk: at(`${p}.attention.wk.weight`),
      wv: at(`${p}.attention.wv.weight`), wo: at(`${p}.attention.wo.weight`), ffn_norm: at(`${p}.ffn_norm.weight`),
    };
    if (model.moe) {
      w.gate = at(`${p}.feed_forward.gate.weight`);
      w.experts = at(`${p}.feed_forward.experts.0.w1.weight`);
    } else {
      Object.assign(w, { w1: at(`${p}.feed_forward.w1.weight`), w2: at(`${p}.feed_forward.w2.weight`), w3: at(`${p}.feed_forward.w3.weight`) });
    }
    return { layer: l.layer, window: l.window, window_or_zero: l.window ?? 0, kv_slots: attention.constants.kv_cache_length!, w };
  });
  const weights = plan.weights.map((w) => {
    const slice = w.slices[0]!;
    const rows = slice.axis === 0 ? slice.length : w.shape[0]!;
    const cols = w.shape.length === 1 ? 1 : slice.axis === 1 ? slice.length : w.shape[1]!;
    return { name: w.name, rows, cols };
  });
  // Where the plan puts a collective (only at TP > 1); the driver renders exactly those.
  const reduced = (kernel: string) => [...plan.prologue, ...plan.layers[0]!.kernels].some((k) => k.kernel === kernel && k.collective === 'all_reduce_sum');
  const collectives = {
    embedding: reduced('embedding_lookup'),
    wo: reduced('wo_residual'),
    ffn: reduced('w2_residual') || reduced('moe_w2_combine_residual'),
  };
  const context = {
    key: plan.key,
    collectives,
    model,
    moe: model.moe,
    dtype: plan.options.dtype,
    tp: plan.options.tp,
    shape: plan.rank_shape,
    group_size: plan.rank_shape.n_heads / plan.rank_shape.n_kv_heads,
    max_tokens: plan.options.maxTokens,
    max_kv_slots: Math.max(...layers.map((l) => l.kv_slots)),
    all_rolling: plan.kv_cache.layers.every((l) => l.kind === 'rolling'),
    weight_type: WEIGHT_TYPE[plan.options.dtype],
    kernel_files: files.map((f) => f.path),
    weights,
    layers,
    final_norm_index: at('norm.weight'),
    output_index: at(model.tied_embeddings ? 'tok_embeddings.weight' : 'output.weight'),
  };
  files.push({ path: 'model.cpp', content: compile(hb, join(dir, 'model.cpp.hbs'))(context) });
  files.push({ path: 'mc_cpu.hpp', content: readFileSync(join(root, 'include', 'mc_cpu.hpp'), 'utf8') });
  files.push({ path: 'mc_abi.h', content: readFileSync(join(packageRoot(), 'runtime', 'abi', 'mc_abi.h'), 'utf8') });
  files.push(typedModelModule(plan));
  files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { files, hash: hashFiles(files) };
}

export function hashFiles(files: SourceFile[], extra = ''): string {
  const h = createHash('sha256');
  for (const f of files) h.update(`${f.path}\0${f.content.length}\0${f.content}\0`);
  h.update(extra);
  return h.digest('hex');
}
