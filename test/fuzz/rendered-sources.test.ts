/**
 * What reaches generated C++ from a params.json: for every config the reader accepts, the rendered
 * CPU sources hold only numbers that are the templates' own constants or values of the plan
 * (itself a pure function of the validated ModelConfig), and no text of the file: rendering the
 * same validated numbers without the file's other keys and strings gives byte-identical sources.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseParamsText } from '../../compiler/config/load.js';
import type { ModelConfig } from '../../compiler/config/model.js';
import { LIMITS, normalizeParams } from '../../compiler/config/normalize.js';
import { renderCpuSources, type RenderedSources } from '../../compiler/emit/render.js';
import { ConfigError } from '../../compiler/errors.js';
import { packageRoot } from '../../compiler/paths.js';
import { buildPlan } from '../../compiler/plan/build-plan.js';
import type { Plan } from '../../compiler/plan/types.js';
import { EDGE_NUMBERS, HOSTILE_STRINGS, type Params, unknownKey, validParams } from './params-arbitraries.js';
import { fuzzParameters, fuzzTimeout } from './settings.js';

const SOURCE = '/models/fuzz-model/params.json';
const ROOT = packageRoot();

/**
 * Decimal literals as C++ reads them: not part of an identifier (w13, int32_t) or of a hex
 * literal, with an optional fraction, exponent and suffix. A minus sign is an operator.
 */
const NUMBER = /(?<![A-Za-z0-9_.])(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[uUlLfF]*(?![A-Za-z0-9_.])/g;

function numbersIn(text: string): number[] {
  return [...text.matchAll(NUMBER)].map((m) => Number(m[0].replace(/[uUlLfF]+$/, '')));
}

/** Every number the CPU templates write themselves (outside {{…}}): loop bounds, literal 2s, errlen. */
const TEMPLATE_NUMBERS = (() => {
  const out = new Set<number>();
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith('.hbs')) for (const n of numbersIn(readFileSync(path, 'utf8').replace(/\{\{[^}]*\}\}/g, ' '))) out.add(n);
    }
  };
  walk(join(ROOT, 'templates', 'cpu'));
  return out;
})();

/** Every number of the plan, plus the indices a template loop or the weight table prints. */
function planNumbers(plan: Plan): Set<number> {
  const out = new Set<number>();
  const stack: unknown[] = [plan];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === 'number') out.add(Math.abs(v));
    else if (Array.isArray(v)) stack.push(...v);
    else if (v !== null && typeof v === 'object') stack.push(...Object.values(v));
  }
  for (let i = 0; i <= plan.weights.length; i++) out.add(i);
  return out;
}

/** Literals of the generated C++ and TypeScript that are neither the templates' nor the plan's. */
function strayNumbers(sources: RenderedSources, plan: Plan): string[] {
  const allowed = planNumbers(plan);
  const stray: string[] = [];
  for (const f of sources.files) {
    if (f.path === 'mc_cpu.hpp' || f.path === 'mc_entry.hpp' || f.path === 'mc_abi.h') continue; // copied verbatim, checked below
    let content = f.content;
    if (f.path === 'model.cpp') {
      // Line 1 names the model, whose name may be digits ("/models/64/params.json" → "64"): a name, not a number.
      const first = `// ${plan.key}: ${plan.model.name}, target cpu, dtype ${plan.options.dtype}, tensor-parallel rank of ${plan.options.tp}.\n`;
      if (!content.startsWith(first)) stray.push(`model.cpp: line 1 is not ${JSON.stringify(first)}`);
      content = content.slice(first.length);
    }
    for (const n of numbersIn(content)) if (!allowed.has(n) && !TEMPLATE_NUMBERS.has(n)) stray.push(`${f.path}: ${n}`);
  }
  return stray;
}

/** The config rebuilt from the validated numbers alone: no unknown keys, no strings but the model's path. */
function cleanParams(c: ModelConfig): Params {
  return {
    dim: c.dim, n_layers: c.n_layers, head_dim: c.head_dim, hidden_dim: c.hidden_dim, n_heads: c.n_heads, n_kv_heads: c.n_kv_heads,
    norm_eps: c.norm_eps, vocab_size: c.vocab_size, rope_theta: c.rope_theta, sliding_window: c.sliding_window, moe: c.moe,
    tied_embeddings: c.tied_embeddings, max_seq_len: c.max_seq_len, max_batch_size: c.max_batch_size,
  };
}

/** Shapes near the validator's limits, where products and literals are largest. */
const largeParams = fc.record({
  n_kv_heads: fc.constantFrom(1, 8, 1024),
  head_dim: fc.constantFrom(2, 128, 1024),
  dim: fc.constantFrom(1, 4096, LIMITS.dim),
  hidden_dim: fc.constantFrom(1, 14336, LIMITS.hidden_dim),
  vocab_size: fc.constantFrom(1, 131072, LIMITS.vocab_size),
  max_seq_len: fc.constantFrom(1, 131072, LIMITS.max_seq_len),
  window: fc.constantFrom(null, 1, 4096, LIMITS.max_seq_len),
  norm_eps: fc.constantFrom(...EDGE_NUMBERS.filter((x) => x >= 2 ** -126 && x < 1)),
  rope_theta: fc.constantFrom(...EDGE_NUMBERS.filter((x) => x >= 1 && x < 1e12), 999999999999.9999),
}).map((r): Params => ({
  dim: r.dim, n_layers: 2, head_dim: r.head_dim, hidden_dim: r.hidden_dim, n_heads: r.n_kv_heads, n_kv_heads: r.n_kv_heads,
  norm_eps: r.norm_eps, vocab_size: r.vocab_size, rope_theta: r.rope_theta, max_seq_len: r.max_seq_len, sliding_window: r.window,
}));

/** Strings a file may carry where the reader ignores them. */
const extras = fc.dictionary(fc.oneof(unknownKey(), fc.constantFrom(...HOSTILE_STRINGS)), fc.oneof(fc.constantFrom<unknown>(...HOSTILE_STRINGS), fc.jsonValue({ maxDepth: 2 })), { maxKeys: 6 });

const renderCase = fc.record({
  params: fc.oneof({ weight: 3, arbitrary: validParams({ max: 4 }) }, { weight: 1, arbitrary: largeParams }),
  extras,
  modelType: fc.constantFrom(undefined, null, 'transformer'),
  maxTokens: fc.integer({ min: 1, max: 8 }),
  dtype: fc.constantFrom('f32' as const, 'bf16' as const, 'f16' as const),
  // The model is named after its path: any path, sanitized into [a-z0-9._-].
  source: fc.oneof(fc.constant(SOURCE), fc.string({ unit: 'binary', maxLength: 30 }).map((s) => `/models/${s}/params.json`), fc.constantFrom(...HOSTILE_STRINGS).map((s) => `/m/${s}/params.json`)),
});

describe('rendered CPU sources of any accepted params.json', () => {
  it('contain only template constants and plan values, and no text from the file', () => {
    fc.assert(fc.property(renderCase, ({ params, extras: more, modelType, maxTokens, dtype, source }) => {
      const file: Params = { ...more, ...params };
      if (modelType !== undefined) file.model_type = modelType;
      let config: ModelConfig;
      try {
        config = normalizeParams(parseParamsText(JSON.stringify(file), source), source);
      } catch (err) {
        if (err instanceof ConfigError) return; // refused: nothing is rendered
        throw err;
      }
      // An accepted config always plans and renders: a PlanError or UnsafeValueError here is a validation gap.
      const plan = buildPlan(config, { maxTokens, dtype });
      const sources = renderCpuSources(plan);
      expect(strayNumbers(sources, plan)).toEqual([]);

      const clean = renderCpuSources(buildPlan(normalizeParams(cleanParams(config), source), { maxTokens, dtype }));
      expect(sources.hash).toBe(clean.hash);
      expect(sources.files).toEqual(clean.files);

      expect(config.name).toMatch(/^[a-z0-9._-]{1,64}$/);
      for (const f of sources.files) {
        // Every C++ string literal is a name the plan made (key, tensor names) or the template's own text.
        if (f.path === 'model.cpp' || f.path.startsWith('kernels/')) for (const [literal] of f.content.matchAll(/"(?:[^"\\\n]|\\.)*"/g)) expect(literal).toMatch(/^"[\x20-\x7e]*"$/);
        if (f.path === 'mc_cpu.hpp' || f.path === 'mc_entry.hpp') expect(f.content).toBe(readFileSync(join(ROOT, 'templates', 'include', f.path), 'utf8'));
        if (f.path === 'mc_abi.h') expect(f.content).toBe(readFileSync(join(ROOT, 'runtime', 'abi', 'mc_abi.h'), 'utf8'));
        // The model's name is the only string of the input's (its path) in the sources.
        for (const s of HOSTILE_STRINGS) if (s.length >= 4 && /[^a-z0-9]/.test(s) && !config.name.includes(s)) expect(f.content).not.toContain(s);
      }
    }), fuzzParameters(60));
  }, fuzzTimeout(60, 150));

  it('finds a stray literal when one is planted (the check itself works)', () => {
    const config = normalizeParams({ dim: 64, n_layers: 1, head_dim: 16, hidden_dim: 96, n_heads: 4, n_kv_heads: 2, norm_eps: 1e-5, vocab_size: 256, rope_theta: 1e6 }, SOURCE);
    const plan = buildPlan(config, { maxTokens: 4, dtype: 'f32' });
    const sources = renderCpuSources(plan);
    expect(strayNumbers(sources, plan)).toEqual([]);
    const planted = { ...sources, files: sources.files.map((f) => (f.path === 'model.cpp' ? { ...f, content: `${f.content}\nconstexpr int X = 4097;\nconstexpr float E = 1e-7f;\n` } : f)) };
    expect(strayNumbers(planted, plan)).toEqual(['model.cpp: 4097', 'model.cpp: 1e-7']);
  });

  it('compiles at the validator\'s limits: no constant overflows int in the generated C++', async () => {
    const config = normalizeParams({
      dim: LIMITS.dim, n_layers: 1, head_dim: LIMITS.head_dim, hidden_dim: LIMITS.hidden_dim, n_heads: LIMITS.n_heads, n_kv_heads: LIMITS.n_heads,
      norm_eps: 2 ** -126, vocab_size: LIMITS.vocab_size, rope_theta: 999999999999.9999, max_seq_len: LIMITS.max_seq_len, sliding_window: LIMITS.max_seq_len,
      moe: { num_experts: 4, num_experts_per_tok: 4 },
    }, SOURCE);
    const plan = buildPlan(config, { maxTokens: 65536, dtype: 'bf16' });
    const { mkdtemp, rm, writeFile, mkdir } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const dir = await mkdtemp(join(tmpdir(), 'mc-fuzz-limits-'));
    try {
      for (const f of renderCpuSources(plan).files) {
        await mkdir(join(dir, f.path, '..'), { recursive: true });
        await writeFile(join(dir, f.path), f.content);
      }
      // -fsyntax-only evaluates every constant expression: an int overflow there is an error.
      const result = await execa('g++', ['-std=c++20', '-fsyntax-only', '-fopenmp', '-march=native', '-Werror=overflow', '-Werror=narrowing', 'model.cpp'], { cwd: dir, reject: false, all: true });
      expect(result.all).toBe('');
      expect(result.exitCode).toBe(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
