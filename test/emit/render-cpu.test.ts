import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadModelConfig } from '../../compiler/config/load.js';
import { renderCpuSources } from '../../compiler/emit/render.js';
import { cxxComment, cxxFloat, cxxInt, cxxName, cxxType, UnsafeValueError } from '../../compiler/emit/safe.js';
import { templateEngine } from '../../compiler/emit/templates.js';
import { MistralCompileError } from '../../compiler/errors.js';
import { buildPlan } from '../../compiler/plan/build-plan.js';
import type { Plan } from '../../compiler/plan/types.js';

const MODELS = join(import.meta.dirname, '../../configs/models');
const TEMPLATES = join(import.meta.dirname, '../../templates');
const plan = (name: string, dtype: Plan['options']['dtype'] = 'bf16') => buildPlan(loadModelConfig(join(MODELS, name)), { dtype, maxTokens: 64 });
const file = (p: Plan, path: string) => renderCpuSources(p).files.find((f) => f.path === path)!.content;

describe('CPU source rendering', () => {
  it('renders one header per fused kernel of the plan, named after it, plus the driver and shared headers', () => {
    const paths = renderCpuSources(plan('tiny-moe')).files.map((f) => f.path);
    expect(paths).toEqual([
      'kernels/attention_gqa_window.hpp', 'kernels/embedding_lookup.hpp', 'kernels/moe_group_by_expert.hpp', 'kernels/moe_w13_swiglu.hpp',
      'kernels/moe_w2_combine_residual.hpp', 'kernels/rmsnorm_moe_gate_topk_softmax.hpp', 'kernels/rmsnorm_output.hpp',
      'kernels/rmsnorm_qkv_rope_cache.hpp', 'kernels/wo_residual.hpp', 'mc_abi.h', 'mc_cpu.hpp', 'mc_entry.hpp', 'model.cpp', 'model.ts',
    ]);
  });

  it('gives byte-identical sources and hash for the same plan', () => {
    const a = renderCpuSources(plan('ministral-8b'));
    const b = renderCpuSources(plan('ministral-8b'));
    expect(a.hash).toBe(b.hash);
    expect(a.files).toEqual(b.files);
  });

  it('changes the hash when the model changes', () => {
    expect(renderCpuSources(plan('tiny-dense')).hash).not.toBe(renderCpuSources(plan('tiny-dense', 'f32')).hash);
  });

  it('bakes the model\'s shapes in as named compile-time constants', () => {
    const p = plan('tiny-dense');
    const attention = file(p, 'kernels/attention_gqa_window.hpp');
    expect(attention).toContain('constexpr int HEAD_DIM = 24;');
    expect(attention).toContain('constexpr int GROUP = 2;');
    const model = file(p, 'model.cpp');
    expect(model).toContain('using W = mc::bf16;');
    expect(model).toContain('constexpr double ROPE_THETA = 10000.0;');
    // window 8 with a 64-token chunk: a ring of 8 + 64 - 1 slots per layer.
    expect(model).toContain('attention_gqa_window::run<8, 71>');
  });

  it('renders each layer of a per-layer window list with its own window', () => {
    const model = file(plan('tiny-window-list'), 'model.cpp');
    expect(model.match(/attention_gqa_window::run<0, 128>/g)).toHaveLength(2);
    expect(model.match(/attention_gqa_window::run<6, 69>/g)).toHaveLength(2);
  });

  it('names the config and options but no machine-specific path or time', () => {
    const model = file(plan('tiny-moe'), 'model.cpp');
    expect(model).toMatch(/^\/\/ tiny-moe\.cpu\.bf16\.tp1: tiny-moe, target cpu, dtype bf16/);
    for (const f of renderCpuSources(plan('tiny-moe')).files) {
      expect(f.content).not.toMatch(/\/work\/|\/home\/|\/tmp\/|\/root\//);
      expect(f.content).not.toMatch(/20\d\d-\d\d-\d\d/);
    }
  });

  it('refuses to render a plan that is not what buildPlan makes of its model and options (no unchecked text or number reaches C++)', () => {
    const p = plan('tiny-dense');
    const cases: Array<[(q: Plan) => void, RegExp]> = [
      [(q) => { (q.layers[0]!.kernels[0]!.constants as Record<string, unknown>).dim = '64; system("id")'; }, /^plan: plan\.layers\[0\]\.kernels\[0\]\.constants\.dim: is "64; system\(\\"id\\"\)" where buildPlan gives 64 for this model and these options; pass a plan made by buildPlan/],
      [(q) => { (q as { key: string }).key = 'x"; system("id"); "'; }, /^plan: plan\.key: is "x\\"; system/],
      [(q) => { (q.model as { name: string }).name = 'x\n#include "/etc/passwd"\n//'; }, /name: .* is not a model name/],
      [(q) => { (q.options as { dtype: string }).dtype = 'bf16\n#error x'; }, /^--dtype: unknown dtype/],
      [(q) => { (q.options as { tp: unknown }).tp = '1\n#error x'; }, /^--tp: unsupported tensor-parallel size/],
      [(q) => { (q.model as { norm_eps: number }).norm_eps = 1e-300; }, /norm_eps: .*below the smallest normal float32/],
    ];
    for (const [tamper, message] of cases) {
      const q = structuredClone(p);
      tamper(q);
      expect(() => renderCpuSources(q)).toThrow(MistralCompileError);
      expect(() => renderCpuSources(q)).toThrow(message);
    }
    // A plan that went through JSON, keys in another order, renders as the original.
    const reordered = Object.fromEntries(Object.entries(JSON.parse(JSON.stringify(p)) as Record<string, unknown>).reverse()) as unknown as Plan;
    expect(renderCpuSources(reordered).hash).toBe(renderCpuSources(p).hash);
  });

  it('prints every value through a checking helper: no bare {{name}} in any template', () => {
    const bare: string[] = [];
    for (const dir of ['cpu', 'cpu/partials', 'cuda', 'cuda/partials']) {
      for (const name of readdirSync(join(TEMPLATES, dir)).filter((f) => f.endsWith('.hbs'))) {
        const text = readFileSync(join(TEMPLATES, dir, name), 'utf8');
        // Expressions: blocks (#, /), partials (>), comments (!), else, and the helpers int, float, name, type, comment.
        for (const m of text.matchAll(/(?<!\\)\{\{(?!\s*(?:[#/>!^]|else\b|(?:int|float|name|type|comment)\s))([^}]*)\}\}/g)) bare.push(`${dir}/${name}: {{${m[1]}}}`);
      }
    }
    expect(bare).toEqual([]);
  });

  it('refuses a block over a value the context does not have ({{#if}}, {{#each}}: strict mode alone lets them drop code)', () => {
    const { hb } = templateEngine('cpu');
    for (const template of ['{{#if moee}}x{{/if}}', '{{#unless moee}}x{{/unless}}', '{{#each kernel_filez}}x{{/each}}', '{{#with shapee}}x{{/with}}']) {
      expect(() => hb.compile(template, { noEscape: true, strict: true })({ moe: null }), template).toThrow(/of a value the context does not have at line 1, column 0/);
    }
    // false, null, 0 and [] keep their meaning.
    expect(hb.compile('{{#if moe}}a{{else}}b{{/if}}{{#each list}}c{{/each}}{{#unless zero}}d{{/unless}}', { noEscape: true, strict: true })({ moe: null, list: [], zero: 0 })).toBe('bd');
  });
});

describe('the value guards of generated code', () => {
  it('print integers and finite numbers as C++ literals', () => {
    expect(cxxInt(4096)).toBe('4096');
    expect(cxxFloat(1e-5)).toBe('0.00001');
    expect(cxxFloat(1000000)).toBe('1000000.0');
    expect(cxxFloat(1e100)).toBe('1e+100');
  });

  it('refuse everything else', () => {
    for (const v of ['1', 1.5, NaN, Infinity, 2 ** 60, null, undefined, {}]) expect(() => cxxInt(v)).toThrow(UnsafeValueError);
    for (const v of ['1', NaN, -Infinity, null]) expect(() => cxxFloat(v)).toThrow(UnsafeValueError);
    for (const v of ['a"b', 'a b', 'x\ny', '', 'a;b', 7]) expect(() => cxxName(v)).toThrow(UnsafeValueError);
    for (const v of ['a */ b', 'a\nb', 'trailing\\']) expect(() => cxxComment(v)).toThrow(UnsafeValueError);
    for (const v of ['mc::bf16 x', 'a;b', '::x', 'x::', '', 'std::vector<int>']) expect(() => cxxType(v)).toThrow(UnsafeValueError);
    expect(cxxType('mc::bf16')).toBe('mc::bf16');
  });
});

describe('the typed module of a compiled model', () => {
  it('types the constants as literals, so code written for one model is checked against its shapes', async () => {
    const { Project } = await import('ts-morph');
    const source = renderCpuSources(plan('tiny-moe')).files.find((f) => f.path === 'model.ts')!.content;
    const project = new Project({ useInMemoryFileSystem: true, compilerOptions: { strict: true, noEmit: true } });
    project.createSourceFile('model.ts', source);
    project.createSourceFile('use.ts', `import { constants } from './model';\nconst v: 1024 = constants.vocab_size;\nconst e: 8 = constants.num_experts;\nexport { v, e };\n`);
    expect(project.getPreEmitDiagnostics().map((d) => d.getMessageText())).toEqual([]);
    project.createSourceFile('wrong.ts', `import { constants } from './model';\nexport const v: 32000 = constants.vocab_size;\n`);
    expect(project.getPreEmitDiagnostics().length).toBeGreaterThan(0);
  });
});
