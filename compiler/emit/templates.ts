import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import Handlebars from 'handlebars';
import { packageRoot } from '../paths.js';
import { kernelNodes } from '../plan/kernels.js';
import { allLayersRolling } from '../plan/memory.js';
import type { KernelNode, Plan, WeightEntry } from '../plan/types.js';
import { cxxComment, cxxFloat, cxxInt, cxxName, cxxType, UnsafeValueError } from './safe.js';

/** What every backend's renderer shares: the template engine, the kernel loop, the weight shapes. */

/** One rendered source file, path relative to the output directory. */
export interface SourceFile {
  path: string;
  content: string;
}

/** The C++ type of a weight element, per dtype (mc::bf16 / mc::f16 are defined in each backend's header). */
export const WEIGHT_TYPE = { f32: 'float', bf16: 'mc::bf16', f16: 'mc::f16' } as const;

export function templatesRoot(): string {
  return join(packageRoot(), 'templates');
}

/** A Handlebars instance for templates/<backend>/, whose only way to print a value is a checking helper. */
export function templateEngine(backend: string): { hb: typeof Handlebars; dir: string } {
  const dir = join(templatesRoot(), backend);
  const hb = Handlebars.create();
  hb.registerHelper('int', cxxInt);
  hb.registerHelper('float', cxxFloat);
  hb.registerHelper('name', cxxName);
  hb.registerHelper('type', cxxType);
  hb.registerHelper('comment', cxxComment);
  // strict: true makes {{x}} of a missing x an error, but not {{#if x}} or {{#each x}}: a misspelt
  // name there would drop a block of code without a word. undefined is never a value of the plan
  // (JSON has none), so these blocks refuse it; false, null and 0 stay what they mean.
  for (const block of ['if', 'unless', 'each', 'with']) {
    const builtIn = hb.helpers[block]! as (this: unknown, ...args: unknown[]) => unknown;
    hb.registerHelper(block, function (this: unknown, ...args: unknown[]) {
      const options = args[args.length - 1] as { loc?: { start: { line: number; column: number } } };
      if (args.length < 2 || args[0] === undefined) {
        const at = options.loc === undefined ? '' : ` at line ${options.loc.start.line}, column ${options.loc.start.column}`;
        throw new UnsafeValueError(`{{#${block}}} of a value the context does not have${at}`);
      }
      return builtIn.apply(this, args);
    });
  }
  const partials = join(dir, 'partials');
  for (const file of readdirSync(partials).sort()) {
    hb.registerPartial(file.replace(/\.hbs$/, ''), readFileSync(join(partials, file), 'utf8'));
  }
  return { hb, dir };
}

export function compileTemplate(hb: typeof Handlebars, file: string) {
  // noEscape: C++ is not HTML. strict: a missing variable is an error, not an empty string.
  return hb.compile(readFileSync(file, 'utf8'), { noEscape: true, strict: true });
}

/**
 * One file per fused kernel of the plan, kernels/<kernel><ext>, rendered from <kernel><ext>.hbs with
 * its first plan node's constants: the constants a kernel bakes in are the same in every layer; what
 * varies per layer (window, ring length) is a template argument.
 */
export function renderKernels(plan: Plan, hb: typeof Handlebars, dir: string, ext: string): SourceFile[] {
  const firstNodes = new Map<string, KernelNode>();
  for (const node of kernelNodes(plan)) {
    if (!firstNodes.has(node.kernel)) firstNodes.set(node.kernel, node);
  }
  return [...firstNodes].map(([kernel, node]) => ({
    path: `kernels/${kernel}${ext}`,
    content: compileTemplate(hb, join(dir, `${kernel}${ext}.hbs`))({
      ...node.constants,
      kernel: cxxName(node.kernel),
      fuses: node.fuses.map(cxxComment),
      key: cxxName(plan.key),
      norm_eps: plan.model.norm_eps,
    }),
  }));
}

/** Rows and columns of rank 0's slice of a weight (every rank's slice has the same shape). */
export function rankSliceShape(w: WeightEntry): { name: string; rows: number; cols: number } {
  const slice = w.slices[0]!;
  const rows = slice.axis === 0 ? slice.length : w.shape[0]!;
  const cols = w.shape.length === 1 ? 1 : slice.axis === 1 ? slice.length : w.shape[1]!;
  return { name: w.name, rows, cols };
}

/** The files every build carries as they are: the backend's headers from templates/include and the ABI. */
export function staticFiles(...headers: string[]): SourceFile[] {
  return [
    ...headers.map((header) => ({ path: header, content: readFileSync(join(templatesRoot(), 'include', header), 'utf8') })),
    { path: 'mc_abi.h', content: readFileSync(join(packageRoot(), 'runtime', 'abi', 'mc_abi.h'), 'utf8') },
  ];
}

export function sortFiles(files: SourceFile[]): SourceFile[] {
  return files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** The driver template's context that every backend shares: the model, this rank's shapes, the rings. */
export function driverContext(plan: Plan, kernelFiles: SourceFile[], kvSlots: number[]) {
  const { model } = plan;
  // Where the plan puts a collective (only at TP > 1); the driver renders exactly those.
  const reduced = (kernel: string) => [...plan.prologue, ...plan.layers[0]!.kernels].some((k) => k.kernel === kernel && k.collective === 'all_reduce_sum');
  return {
    collectives: {
      embedding: reduced('embedding_lookup'),
      wo: reduced('wo_residual'),
      ffn: reduced('w2_residual') || reduced('moe_w2_combine_residual'),
    },
    key: plan.key,
    model,
    moe: model.moe,
    dtype: plan.options.dtype,
    tp: plan.options.tp,
    shape: plan.rank_shape,
    group_size: plan.rank_shape.n_heads / plan.rank_shape.n_kv_heads,
    max_tokens: plan.options.maxTokens,
    max_kv_slots: Math.max(...kvSlots),
    all_rolling: allLayersRolling(model),
    weight_type: WEIGHT_TYPE[plan.options.dtype],
    kernel_files: kernelFiles.map((f) => f.path),
  };
}
