import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { Plan } from '../plan/types.js';
import { compileTemplate, rankSliceShape, renderKernels, sortFiles, staticFiles, templateEngine, driverContext, type SourceFile } from './templates.js';
import { TYPED_MODULE_PATH, typedModelModule } from './typed-module.js';
import { checkPlan } from '../plan/check-plan.js';

export type { SourceFile } from './templates.js';

export interface RenderedSources {
  files: SourceFile[];
  /**
   * sha256 over every compiled file's path and content: the build cache key (with the compiler
   * flags). model.ts is not compiled, so it is not part of it.
   */
  hash: string;
}

export interface RenderOptions {
  /**
   * Also emit model.ts, the typed constants module (default true). Printing it loads ts-morph, i.e.
   * the TypeScript compiler (~70 MiB resident for the life of the process), so a runtime that only
   * needs the library turns it off: builds write it only where a person reads the sources (--out).
   */
  typedModule?: boolean;
}

/** Sorts `files`, hashes the compiled ones, then adds model.ts unless options say not to. */
export function withTypedModule(plan: Plan, files: SourceFile[], options: RenderOptions = {}): RenderedSources {
  sortFiles(files);
  const hash = hashFiles(files);
  if (options.typedModule ?? true) {
    files.push(typedModelModule(plan));
    sortFiles(files);
  }
  return { files, hash };
}

/** Renders the CPU sources of a plan. Pure: the same plan gives byte-identical files. */
export function renderCpuSources(plan: Plan, options: RenderOptions = {}): RenderedSources {
  if (plan.options.target !== 'cpu') throw new Error(`internal: renderCpuSources called for target ${plan.options.target}`);
  checkPlan(plan);
  const { hb, dir } = templateEngine('cpu');
  const { model } = plan;
  const files = renderKernels(plan, hb, dir, '.hpp');

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
  const weights = plan.weights.map(rankSliceShape);
  const context = {
    ...driverContext(plan, files, layers.map((l) => l.kv_slots)),
    weights,
    layers,
    final_norm_index: at('norm.weight'),
    output_index: at(model.tied_embeddings ? 'tok_embeddings.weight' : 'output.weight'),
  };
  files.push({ path: 'model.cpp', content: compileTemplate(hb, join(dir, 'model.cpp.hbs'))(context) }, ...staticFiles('mc_cpu.hpp', 'mc_entry.hpp'));
  return withTypedModule(plan, files, options);
}

/** sha256 over the compiled files (all but model.ts) and `extra`. */
export function hashFiles(files: SourceFile[], extra = ''): string {
  const h = createHash('sha256');
  for (const f of files) if (f.path !== TYPED_MODULE_PATH) h.update(`${f.path}\0${f.content.length}\0${f.content}\0`);
  h.update(extra);
  return h.digest('hex');
}
