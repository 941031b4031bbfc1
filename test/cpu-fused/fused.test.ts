/**
 * The CPU backend's fused kernels (templates/cpu/<kernel>.hpp.hbs), each on its own against a float64
 * reference written from the formulas (check_fused.cpp): fresh random inputs at 1 to 64 tokens,
 * outputs poisoned with NaN, weights given as every TP rank's view of a whole tensor (the other
 * ranks' parts NaN), prefill chunks across a sliding window's ring wrap. The model's logits are
 * checked end to end elsewhere (test/reference, test/judge); this says which kernel is wrong.
 *
 * For each variant (config, dtype, TP) the sources are rendered from its plan as a model build
 * renders them, and the checker is compiled against them with the model build's flags (CPU_FLAGS,
 * -march=native -fopenmp; an executable, not a library). A fresh seed per run, printed;
 * MC_FUSED_SEED=<seed> replays one, MC_FUSED_VARIANTS=all checks every config × dtype × TP.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { CPU_FLAGS, cxxCommand } from '../../compiler/build/toolchain.js';
import { loadModelConfig } from '../../compiler/config/load.js';
import { renderCpuSources } from '../../compiler/emit/render.js';
import { cxxFloat, cxxInt, cxxName, cxxType } from '../../compiler/emit/safe.js';
import { WEIGHT_TYPE } from '../../compiler/emit/templates.js';
import { packageRoot } from '../../compiler/paths.js';
import { buildPlan } from '../../compiler/plan/build-plan.js';
import { kernelNodes } from '../../compiler/plan/kernels.js';
import { DTYPE_BYTES } from '../../compiler/plan/memory.js';
import type { Dtype, KernelName, Plan, TpSize } from '../../compiler/plan/types.js';
import type { Checkpoint } from '../../runtime/checkpoint-files.js';
import { rankWeightViews } from '../../runtime/checkpoint.js';
import { limiter } from '../cuda/helpers.js';

const root = packageRoot();
const work = mkdtempSync(join(tmpdir(), 'mc-cpu-fused-'));

/** Prefill chunk of every variant: 64 tokens is more than one prefill tile (48) and makes rings of window + 63 slots. */
const MAX_TOKENS = 64;

interface Variant { config: string; dtype: Dtype; tp: TpSize }
const CONFIGS = ['tiny-dense', 'tiny-window-list', 'tiny-moe', 'tiny-moe-top1'];
// Every config in both dtypes, and each dtype at TP 1 and 2 on a dense and a MoE model: 8 builds of
// about 4-5 s each on 2 cores. All 16 combinations would pass the minute this test may take;
// MC_FUSED_VARIANTS=all runs them.
const VARIANTS: Variant[] = process.env.MC_FUSED_VARIANTS === 'all'
  ? CONFIGS.flatMap((config) => (['f32', 'bf16'] as const).flatMap((dtype) => ([1, 2] as const).map((tp) => ({ config, dtype, tp }))))
  : [
    { config: 'tiny-dense', dtype: 'f32', tp: 1 },
    { config: 'tiny-dense', dtype: 'bf16', tp: 2 },
    { config: 'tiny-window-list', dtype: 'f32', tp: 2 },
    { config: 'tiny-window-list', dtype: 'bf16', tp: 1 },
    { config: 'tiny-moe', dtype: 'f32', tp: 1 },
    { config: 'tiny-moe', dtype: 'bf16', tp: 2 },
    { config: 'tiny-moe-top1', dtype: 'f32', tp: 2 },
    { config: 'tiny-moe-top1', dtype: 'bf16', tp: 1 },
  ];

/**
 * fused_config.hpp: what the checker needs from the plan beyond the kernels' own constants: the
 * weight type, each weight's view per rank (rankWeightViews, the runtime's own rule), vocabulary
 * starts, rope_theta, and each distinct layer's (window, ring length) as MC_LAYER_KINDS.
 */
function configHeader(plan: Plan): string {
  const { model, options } = plan;
  const elt = DTYPE_BYTES[options.dtype];
  // rankWeightViews reads only where each tensor starts in its file: here every tensor starts at 0,
  // so a view's offset is its first element times the element size.
  const standIn = { tensors: new Map(plan.weights.map((w) => [w.name, { file: 0, info: { offset: 0 } }])) } as unknown as Checkpoint;
  const views = Array.from({ length: options.tp }, (_, rank) => new Map(rankWeightViews(standIn, plan, rank).map((v) => [v.name, v])));
  const tensor = (name: string): string => {
    const w = plan.weights.find((x) => x.name === name);
    if (w === undefined) throw new Error(`plan ${plan.key} has no weight ${name}`);
    const ranks = views.map((byName) => {
      const v = byName.get(name)!;
      return `{${cxxInt(v.offset / elt)}, ${cxxInt(v.rowStride)}, ${cxxInt(v.rows)}, ${cxxInt(v.cols)}}`;
    });
    return `{"${cxxName(name)}", ${cxxInt(w.shape[0]!)}, ${cxxInt(w.shape[1] ?? 1)}, {${ranks.join(', ')}}}`;
  };
  const l0 = 'layers.0';
  const lines = [
    `// Written by test/cpu-fused/fused.test.ts from the plan of ${cxxName(plan.key)} for check_fused.cpp.`,
    '#pragma once',
    '#include "mc_cpu.hpp"',
    `using W = ${cxxType(WEIGHT_TYPE[options.dtype])};  // weight dtype`,
    'using KV = W;  // the KV cache keeps the weight dtype (templates/cpu/model.cpp.hbs)',
    'namespace plan {',
    `constexpr const char* KEY = "${cxxName(plan.key)}";`,
    `constexpr int TP = ${cxxInt(options.tp)};`,
    `constexpr int VOCAB = ${cxxInt(model.vocab_size)};`,
    `constexpr int MAX_TOKENS = ${cxxInt(options.maxTokens)};`,
    `constexpr double ROPE_THETA = ${cxxFloat(model.rope_theta)};`,
    `constexpr int32_t VOCAB_START[TP] = {${plan.rank_shape.vocab_start.map(cxxInt).join(', ')}};`,
    '/** One rank\'s view of a tensor: first element, elements between rows, rows and columns of the slice. */',
    'struct Slice { int64_t first, row_stride, rows, cols; };',
    '/** A checkpoint tensor: name, full rows and columns, the slice of each rank. */',
    'struct Tensor { const char* name; int64_t rows, cols; Slice rank[TP]; };',
    `constexpr Tensor TOK_EMBEDDINGS = ${tensor('tok_embeddings.weight')};`,
    `constexpr Tensor NORM = ${tensor('norm.weight')};`,
    `constexpr Tensor OUTPUT = ${tensor(model.tied_embeddings ? 'tok_embeddings.weight' : 'output.weight')};`,
    `constexpr Tensor ATTENTION_NORM = ${tensor(`${l0}.attention_norm.weight`)};`,
    ...['wq', 'wk', 'wv', 'wo'].map((w) => `constexpr Tensor ${w.toUpperCase()} = ${tensor(`${l0}.attention.${w}.weight`)};`),
    `constexpr Tensor FFN_NORM = ${tensor(`${l0}.ffn_norm.weight`)};`,
  ];
  if (model.moe === null) {
    lines.push(...['w1', 'w2', 'w3'].map((w) => `constexpr Tensor ${w.toUpperCase()} = ${tensor(`${l0}.feed_forward.${w}.weight`)};`));
  } else {
    const experts = Array.from({ length: model.moe.num_experts }, (_, e) => e);
    lines.push(
      `constexpr int EXPERTS = ${cxxInt(model.moe.num_experts)};`,
      `constexpr Tensor GATE = ${tensor(`${l0}.feed_forward.gate.weight`)};`,
      ...['w1', 'w2', 'w3'].map((w) => `constexpr Tensor EXPERT_${w.toUpperCase()}[EXPERTS] = {${experts.map((e) => tensor(`${l0}.feed_forward.experts.${e}.${w}.weight`)).join(', ')}};`),
    );
  }
  const kinds = new Set(plan.layers.map((l) => {
    const attention = l.kernels.find((k) => k.kernel === 'attention_gqa_window')!;
    return `X(${cxxInt(attention.constants.window!)}, ${cxxInt(attention.constants.kv_cache_length!)})`;
  }));
  lines.push('}  // namespace plan', `// (window or 0, KV ring length) of each distinct layer`, `#define MC_LAYER_KINDS(X) ${[...kinds].join(' ')}`, '');
  return lines.join('\n');
}

interface CaseResult { name: string; error: number; tolerance: number; ok: boolean }
interface VariantResult { variant: Variant; key: string; kernels: Set<KernelName>; header: string; cases: CaseResult[] }

/** Renders the variant's sources, builds the checker against them and runs it. */
async function buildAndRun(v: Variant): Promise<VariantResult> {
  const model = loadModelConfig(join(root, 'configs', 'models', v.config));
  const plan = buildPlan(model, { target: 'cpu', dtype: v.dtype, tp: v.tp, maxTokens: MAX_TOKENS });
  const dir = join(work, plan.key);
  for (const f of renderCpuSources(plan, { typedModule: false }).files) {
    mkdirSync(dirname(join(dir, f.path)), { recursive: true });
    writeFileSync(join(dir, f.path), f.content);
  }
  writeFileSync(join(dir, 'fused_config.hpp'), configHeader(plan));
  const exe = join(dir, 'check_fused');
  const flags = CPU_FLAGS.filter((f) => f !== '-shared');  // the model's flags, for an executable
  await execa(cxxCommand(), [...flags, `-I${dir}`, join(root, 'test', 'cpu-fused', 'check_fused.cpp'), '-o', exe]);
  // Exit code 1 means a failed case: the lines say which, so parse them either way.
  const seed = process.env.MC_FUSED_SEED;
  const { stdout } = await execa(exe, seed === undefined ? [] : [seed], { env: { OMP_NUM_THREADS: '2' }, reject: false });
  const lines = stdout.trim().split('\n');
  if (!/^done, \d+ failed$/.test(lines.at(-1) ?? '')) throw new Error(`${plan.key}: the checker did not run to the end:\n${lines.slice(-3).join('\n')}`);
  const cases = lines.slice(1, -1).map((line) => {
    const [name, error, tolerance, verdict] = line.split(' ');
    return { name: name!, error: error === 'inf' ? Infinity : Number(error), tolerance: Number(tolerance), ok: verdict === 'ok' };
  });
  return { variant: v, key: plan.key, kernels: new Set(kernelNodes(plan).map((k) => k.kernel)), header: lines[0]!, cases };
}

// Two builds (and runs) at a time: CI has 2 cores.
const slot = limiter(2);
const runs = VARIANTS.map((v) => slot(() => buildAndRun(v)));
const results = Promise.all(runs);
results.catch(() => {});  // each test awaits it and reports a failure there
// After every build has stopped writing there (one failed build rejects `results` while others go on).
afterAll(async () => {
  await Promise.allSettled(runs);
  rmSync(work, { recursive: true, force: true });
});

const KERNELS: Array<[KernelName, string]> = [
  ['embedding_lookup', 'copies the rows of this rank\'s vocabulary slice and zeros for other tokens'],
  ['rmsnorm_qkv_rope_cache', 'gives float64\'s RMSNorm, q|k|v projection and RoPE, and writes k and v to slot position mod ring length only'],
  ['attention_gqa_window', 'gives float64\'s causal attention within the sliding window, the queries of a group sharing their KV head, across the ring\'s wrap'],
  ['wo_residual', 'adds the output projection to the residual'],
  ['rmsnorm_w13_swiglu', 'gives float64\'s silu(w1·x) ⊙ (w3·x) of the normed residual'],
  ['w2_residual', 'adds the down projection to the residual'],
  ['rmsnorm_moe_gate_topk_softmax', 'picks the top-k gate logits (ties to the lower expert) with softmax weights over those k'],
  ['moe_group_by_expert', 'lists every token-expert pair once, in its expert\'s range'],
  ['moe_w13_swiglu', 'gives float64\'s silu(w1·x) ⊙ (w3·x) of each expert for each of its rows'],
  ['moe_w2_combine_residual', 'adds each chosen expert\'s w2 output, scaled by its routing weight, to the residual'],
  ['rmsnorm_output', 'gives float64\'s logits of the normed residual rows over this rank\'s vocabulary'],
];

describe('fused CPU kernels of the tiny configs (f32 and bf16, TP 1 and 2) against float64', () => {
  for (const [kernel, behaviour] of KERNELS) {
    it(`${kernel} ${behaviour}, writing every output`, async (ctx) => {
      const all = await results;
      const failed: string[] = [];
      const worst = new Map<Dtype, number>();
      let cases = 0, exact = 0;
      for (const r of all) {
        const mine = r.cases.filter((c) => c.name.startsWith(`${kernel}/`));
        expect(mine.length > 0, `${r.key}: cases of ${kernel} run (the plan has it: ${r.kernels.has(kernel)})`).toBe(r.kernels.has(kernel));
        cases += mine.length;
        for (const c of mine) {
          if (!c.ok) failed.push(`${r.key}: ${c.name}: ${c.error} > ${c.tolerance} (${r.header})`);
          if (c.tolerance === 0) ++exact;
          else worst.set(r.variant.dtype, Math.max(worst.get(r.variant.dtype) ?? 0, c.error));
        }
      }
      expect(failed, 'replay a seed with MC_FUSED_SEED=<seed> npx vitest run test/cpu-fused').toEqual([]);
      const errors = [...worst].map(([dtype, e]) => `${dtype} ${e.toExponential(2)}`).join(', ');
      ctx.annotate(`${cases} cases${exact > 0 ? ` (${exact} exact)` : ''}${errors ? `, worst relative L2: ${errors}` : ''}`);
    }, 180_000);
  }
});
