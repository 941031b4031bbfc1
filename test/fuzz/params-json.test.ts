/**
 * Property tests of the params.json reader: whatever the text, the answer is a ModelConfig whose
 * every number passed validation, or one ConfigError line naming the file, the field and the fix.
 * Never another exception, never a silently changed value, never a duplicate key let through.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeParamsBytes, loadModelConfig, parseParamsText } from '../../compiler/config/load.js';
import type { ModelConfig } from '../../compiler/config/model.js';
import { LIMITS, normalizeParams } from '../../compiler/config/normalize.js';
import { ConfigError, showValue } from '../../compiler/errors.js';
import {
  applyMutations, jsonValue, mutation, NUMERIC_FIELDS, type Params, textForm, unknownKey, validParams, writeText,
} from './params-arbitraries.js';
import { fuzzParameters, fuzzTimeout } from './settings.js';

const SOURCE = '/models/fuzz/params.json';
const dir = mkdtempSync(join(tmpdir(), 'mc-fuzz-params-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

type Outcome = { config: ModelConfig; error?: undefined } | { config?: undefined; error: ConfigError };

/** The reader's answer; any exception other than a ConfigError escapes and fails the property. */
function read(text: string, source = SOURCE): Outcome {
  try {
    return { config: normalizeParams(parseParamsText(text, source), source) };
  } catch (err) {
    if (err instanceof ConfigError) return { error: err };
    throw err;
  }
}

/** A message a user can read on one terminal line: the file first, no control characters. */
function expectOneLine(error: ConfigError, source: string): void {
  const m = error.message;
  expect(m.startsWith(`${source}: `), m).toBe(true);
  if (error.field !== undefined) expect(m.startsWith(`${source}: ${error.field}: `), m).toBe(true);
  expect(m, 'no control characters').not.toMatch(/[\u0000-\u001f\u007f]/);
  expect(m.length, m).toBeLessThan(600);
  expect(m, 'problem; fix').toContain('; ');
}

/** Every number of an accepted config is a finite number of the right kind inside its documented range. */
function expectValidated(c: ModelConfig): void {
  const int = (v: number, min: number, max: number, what: string) => {
    expect(Number.isSafeInteger(v), `${what} = ${v} is an integer`).toBe(true);
    expect(v >= min && v <= max, `${what} = ${v} in [${min}, ${max}]`).toBe(true);
  };
  int(c.dim, 1, LIMITS.dim, 'dim');
  int(c.n_layers, 1, LIMITS.n_layers, 'n_layers');
  int(c.head_dim, 2, LIMITS.head_dim, 'head_dim');
  expect(c.head_dim % 2).toBe(0);
  int(c.hidden_dim, 1, LIMITS.hidden_dim, 'hidden_dim');
  int(c.n_heads, 1, LIMITS.n_heads, 'n_heads');
  int(c.n_kv_heads, 1, c.n_heads, 'n_kv_heads');
  expect(c.n_heads % c.n_kv_heads).toBe(0);
  int(c.vocab_size, 1, LIMITS.vocab_size, 'vocab_size');
  int(c.max_seq_len, 1, LIMITS.max_seq_len, 'max_seq_len');
  int(c.max_batch_size, 1, LIMITS.max_batch_size, 'max_batch_size');
  // The kernels compute in float32: eps must stay a normal float32, not round to 0.
  expect(Number.isFinite(c.norm_eps) && c.norm_eps >= 2 ** -126 && c.norm_eps < 1, `norm_eps ${c.norm_eps}`).toBe(true);
  expect(Number.isFinite(c.rope_theta) && c.rope_theta >= 1 && c.rope_theta < LIMITS.rope_theta, `rope_theta ${c.rope_theta}`).toBe(true);
  expect(c.sliding_window).toHaveLength(c.n_layers);
  for (const w of c.sliding_window) if (w !== null) int(w, 1, LIMITS.max_seq_len, 'sliding_window entry');
  if (c.moe !== null) {
    int(c.moe.num_experts, 1, LIMITS.num_experts, 'moe.num_experts');
    int(c.moe.num_experts_per_tok, 1, c.moe.num_experts, 'moe.num_experts_per_tok');
    expect(Object.keys(c.moe).sort()).toEqual(['num_experts', 'num_experts_per_tok']);
  }
  expect(typeof c.tied_embeddings).toBe('boolean');
  expect(c.name).toMatch(/^[a-z0-9._-]{1,64}$/);
  expect(c.name).not.toMatch(/^[.-]|[.-]$/);
  for (const note of c.notes) {
    expect(note).not.toMatch(/[\u0000-\u001f]/);
    expect(note.length).toBeLessThan(1000);
  }
  // Plain data: survives JSON unchanged (no NaN, no undefined, no functions).
  expect(JSON.parse(JSON.stringify(c))).toEqual(c);
}

/** Values present in the file are taken as they are: nothing is rounded, clamped or converted. */
function expectSameNumbers(c: ModelConfig, p: Params): void {
  for (const f of NUMERIC_FIELDS) {
    const v = p[f];
    if (typeof v !== 'number') continue;
    if (f === 'max_batch_size') expect(c.max_batch_size).toBe(Math.max(1, v));
    else expect(c[f], f).toBe(v);
  }
  const window = p.sliding_window ?? p._sliding_window;
  if (typeof window === 'number') expect(new Set(c.sliding_window)).toEqual(new Set([window]));
  if (Array.isArray(window)) c.sliding_window.forEach((w, i) => expect(w).toBe(window[i % window.length]));
  if (p.moe !== undefined && p.moe !== null) expect(c.moe).toEqual(p.moe);
}

describe('params.json reader, property-based', () => {
  it('accepts every valid config, keeping every number as written', () => {
    fc.assert(fc.property(validParams(), (p) => {
      const out = read(JSON.stringify(p));
      expect(out.error?.message).toBeUndefined();
      expectValidated(out.config!);
      expectSameNumbers(out.config!, p);
    }), fuzzParameters(300));
  });

  it('answers a broken config with a validated ModelConfig or one ConfigError line, never another exception', () => {
    let accepted = 0;
    let runs = 0;
    fc.assert(fc.property(validParams(), fc.array(mutation(), { minLength: 1, maxLength: 4 }), (base, mutations) => {
      runs++;
      const text = JSON.stringify(applyMutations(base, mutations));
      // What the file says (JSON has no Infinity: JSON.stringify wrote null).
      const p = JSON.parse(text) as Params;
      const out = read(text);
      if (out.error !== undefined) expectOneLine(out.error, SOURCE);
      else {
        accepted++;
        expectValidated(out.config);
        expectSameNumbers(out.config, p);
      }
    }), fuzzParameters(1000));
    // Both sides stay exercised: configs that pass the checks of accepted values, and refusals.
    expect(accepted / runs).toBeGreaterThan(0.03);
    expect(accepted / runs).toBeLessThan(0.97);
  }, fuzzTimeout(1000, 2));

  it('refuses a key written twice at any depth, naming it, and answers other odd texts as the spec says', () => {
    fc.assert(fc.property(validParams(), textForm(), (p, form) => {
      const { text, expect: wanted } = writeText(p, form);
      const out = read(text);
      switch (wanted.kind) {
        case 'as-object': {
          const again = read(JSON.stringify(p));
          expect(out.error?.message).toBe(again.error?.message);
          if (out.config !== undefined) expectValidated(out.config);
          break;
        }
        case 'duplicate': {
          expect(out.error, text.slice(0, 200)).toBeInstanceOf(ConfigError);
          expectOneLine(out.error!, SOURCE);
          const field = /^[\w.[\]-]{1,80}$/.test(wanted.field) ? wanted.field : showValue(wanted.field);
          expect(out.error!.field).toBe(field);
          expect(out.error!.message).toContain('appears twice in one object');
          break;
        }
        case 'syntax':
          expect(out.error, text.slice(0, 200)).toBeInstanceOf(ConfigError);
          expectOneLine(out.error!, SOURCE);
          expect(out.error!.message).toContain('is not valid JSON');
          expect(out.error!.message).toContain(wanted.contains);
          break;
        case 'depth':
          expect(out.error).toBeInstanceOf(ConfigError);
          expectOneLine(out.error!, SOURCE);
          expect(out.error!.message).toMatch(/nests deeper than 64 levels/);
          break;
      }
    }), fuzzParameters(500));
  }, fuzzTimeout(500, 5));

  it('answers any JSON value and any text with a config or a ConfigError', () => {
    const text = fc.oneof(
      jsonValue().map((v) => JSON.stringify(v) ?? 'null'),
      fc.dictionary(unknownKey(), jsonValue(), { maxKeys: 12 }).map((d) => JSON.stringify(d)),
      fc.string({ unit: 'binary', maxLength: 200 }),
      fc.string({ unit: fc.constantFrom('{', '}', '[', ']', '"', ':', ',', '\\', 'u', '0', '1', 'e', '-', ' ', 'd', 'i', 'm', 'N', 'a'), maxLength: 60 }),
    );
    fc.assert(fc.property(text, (t) => {
      const out = read(t);
      if (out.error !== undefined) expectOneLine(out.error, SOURCE);
      else expectValidated(out.config);
    }), fuzzParameters(1000));
  });

  it('names a model after any path without letting the path into the name', () => {
    const path = fc.oneof(fc.string({ unit: 'binary', maxLength: 60 }), fc.constantFrom('', '/', '.', '..', '../..', '/a/../params.json', 'C:\\m\\params.json', '/m/.hidden/params.json', '/m/-x-/params.json'));
    fc.assert(fc.property(path, validParams(), (source, p) => {
      const out = read(JSON.stringify(p), source);
      if (out.error !== undefined) expectOneLine(out.error, source);
      else expectValidated(out.config);
    }), fuzzParameters(300));
  });

  it('reads any bytes from disk as UTF-8 JSON or refuses them in one line', () => {
    const bytes = fc.oneof(
      fc.uint8Array({ maxLength: 200 }),
      validParams().chain((p) => fc.tuple(fc.constant(Buffer.from(JSON.stringify(p))), fc.nat(), fc.integer({ min: 0, max: 255 }))
        .map(([b, at, byte]) => {
          const copy = Uint8Array.from(b);
          copy[at % copy.length] = byte;
          return copy;
        })),
    );
    let n = 0;
    fc.assert(fc.property(bytes, (b) => {
      const path = join(dir, `bytes-${n++}.json`);
      writeFileSync(path, b);
      let out: Outcome;
      try {
        out = { config: loadModelConfig(path) };
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err;
        out = { error: err };
      }
      if (out.error !== undefined) expectOneLine(out.error, path);
      else expectValidated(out.config);
    }), fuzzParameters(200));
  });
});

describe('params.json reader, hand-picked cases the properties rely on', () => {
  const base = { dim: 64, n_layers: 2, head_dim: 16, hidden_dim: 128, n_heads: 4, n_kv_heads: 2, norm_eps: 1e-5, vocab_size: 512, rope_theta: 1e6 };

  it('refuses a duplicate key, also one spelled with escapes', () => {
    const text = `{"dim": 64, "n_layers": 2, "head_dim": 16, "hidden_dim": 128, "n_heads": 4, "n_kv_heads": 2, "norm_eps": 1e-5, "vocab_size": 512, "\\u0064im": 4096}`;
    expect(() => read(text)).not.toThrow();
    expect(read(text).error?.message).toBe(`${SOURCE}: dim: appears twice in one object (JSON.parse keeps the last silently, other readers the first); keep one "dim" and delete the other`);
  });

  it('refuses a duplicate key inside moe, naming moe.num_experts', () => {
    const text = JSON.stringify(base).replace(/}$/, ', "moe": {"num_experts": 8, "num_experts_per_tok": 2, "num_experts": 2}}');
    expect(read(text).error?.message).toMatch(/^\/models\/fuzz\/params\.json: moe\.num_experts: appears twice in one object/);
  });

  it('accepts the same key in two different objects', () => {
    const text = JSON.stringify({ ...base, moe: { num_experts: 2, num_experts_per_tok: 1 }, extra: { num_experts: 3 } });
    expect(read(text).config?.moe).toEqual({ num_experts: 2, num_experts_per_tok: 1 });
  });

  it('explains Python\'s bare NaN and Infinity', () => {
    expect(read(JSON.stringify(base).replace('1e-5', 'NaN').replace('0.00001', 'NaN')).error?.message)
      .toMatch(/is not valid JSON \(NaN is not a JSON number \(Python writes it for a non-finite float\)\)/);
    expect(read(JSON.stringify(base).replace('1000000', '-Infinity')).error?.message).toContain('-Infinity is not a JSON number');
  });

  it('refuses nesting deeper than 64 levels without exhausting the stack', () => {
    const deep = `{"dim": ${'['.repeat(1_000_000)}${']'.repeat(1_000_000)}}`;
    expect(read(deep).error?.message).toMatch(/^\/models\/fuzz\/params\.json: dim: nests deeper than 64 levels/);
  });

  it('keeps control characters and overrides of the input out of a syntax error', () => {
    const message = read('{"dim": \u001b[31m, "x": "\u202e"}').error!.message;
    expect(message).not.toMatch(/[\u001b\u202e]/);
    expect(message).toContain('is not valid JSON');
  });

  it('refuses a norm_eps that float32 kernels would round to 0, and a rope_theta below 1', () => {
    expect(read(JSON.stringify({ ...base, norm_eps: 1e-40 })).error?.message).toMatch(/norm_eps: is below the smallest normal float32/);
    expect(read(JSON.stringify({ ...base, rope_theta: 0.5 })).error?.message).toMatch(/rope_theta: is below 1/);
  });

  it('checks a head_dim derived from dim / n_heads against the same range as a written one', () => {
    const written = read(JSON.stringify({ ...base, dim: 4096, n_heads: 2, n_kv_heads: 1, head_dim: 2048 })).error?.message;
    const derived = read(JSON.stringify({ ...base, dim: 4096, n_heads: 2, n_kv_heads: 1, head_dim: undefined })).error?.message;
    expect(written).toMatch(/head_dim: is out of range/);
    expect(derived).toMatch(/head_dim: dim \/ n_heads = 2048 is out of range/);
  });

  it('refuses a config whose checkpoint would hold more tensors than a plan can list', () => {
    const huge = read(JSON.stringify({ ...base, n_layers: 1024, moe: { num_experts: 1024, num_experts_per_tok: 2 } })).error?.message;
    expect(huge).toMatch(/moe\.num_experts: 1024 layers × 1024 experts make a checkpoint of 3152899 tensors/);
  });

  it('lists at most a few ignored keys, however many the file has', () => {
    const many: Params = { ...base };
    for (let i = 0; i < 50_000; i++) many[`k${i}`] = i;
    const started = performance.now();
    const config = read(JSON.stringify(many)).config!;
    expect(performance.now() - started).toBeLessThan(2000);
    const note = config.notes.find((n) => n.startsWith('ignored keys'))!;
    expect(note).toMatch(/^ignored keys: "k0", "k1", .* and 49990 more$/);
  });

  it('reads a long file (a 900 KB string in an unknown key) and refuses one over 1 MiB', () => {
    const path = join(dir, 'long.json');
    writeFileSync(path, JSON.stringify({ ...base, comment: 'x'.repeat(900_000) }));
    expect(loadModelConfig(path).dim).toBe(64);
    writeFileSync(path, JSON.stringify({ ...base, comment: 'x'.repeat(1_100_000) }));
    expect(() => loadModelConfig(path)).toThrow(/long\.json: is \d+ bytes, too large for a params\.json/);
  });

  it('refuses a model name (loadModelConfig\'s name option) that is not a plain file-name-safe word', () => {
    for (const name of ['', 'A', 'x\n#include <x>', '../up', '-x', 'x.', 'x'.repeat(65), 'a b']) {
      expect(() => normalizeParams(base, SOURCE, { name })).toThrow(/^name: .* is not a model name; use 1 to 64 characters/);
    }
    for (const name of ['tiny-moe', 'x', '__proto__', 'mistral-7b-v0.3', '64']) expect(normalizeParams(base, SOURCE, { name }).name).toBe(name);
  });

  it('refuses bytes that are not UTF-8', () => {
    expect(() => decodeParamsBytes(Uint8Array.from([0x7b, 0xff, 0x7d]), 'p.json')).toThrow(/^p\.json: is not valid UTF-8; save params\.json as UTF-8 text$/);
  });
});
