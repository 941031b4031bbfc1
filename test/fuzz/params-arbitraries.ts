/**
 * Generators of hostile params.json: a valid config with a few fields broken in the ways files
 * break (wrong types, huge, negative, fractional, non-finite, "NaN" strings, unicode and quotes,
 * nesting), extra keys with odd names, duplicate keys and Python's bare NaN written into the text,
 * and plain random JSON or text. Each case carries what the reader must say about it.
 */
import fc from 'fast-check';

export type Params = Record<string, unknown>;

/** Every field the reader knows, with a generator of values it must accept. */
export const NUMERIC_FIELDS = ['dim', 'n_layers', 'head_dim', 'hidden_dim', 'n_heads', 'n_kv_heads', 'norm_eps', 'vocab_size', 'rope_theta', 'max_seq_len', 'max_batch_size'] as const;

/** Text an attacker would put where a number or name goes: C++ and shell metacharacters, quotes, unicode. */
export const HOSTILE_STRINGS = [
  '64; system("rm -rf /")', '*/ #include "/etc/passwd" /*', '\\\n#define DIM 1', '"}; int x = {"', '${process.exit(1)}', '{{int dim}}',
  '</script>', '\u0000', '\u001b[31mred', '\u202eevil', 'NaN', 'Infinity', '-Infinity', '1e400', '0x40', '64', ' 64', '６４', 'é', '😀',
  '\ud800', '\u2028', '__proto__', 'constructor',
];

/** Numbers at and around every boundary that matters: 0, 1, signs, fractions, 2^31, 2^53, float limits. */
export const EDGE_NUMBERS = [
  0, -0, 1, -1, 2, 3, 0.5, 1.5, -2.5, 7, 8, 64, 127.5, 1023, 1024, 1025, 65535, 65536, 65537, 2 ** 20, 2 ** 22, 2 ** 24, 2 ** 31 - 1, 2 ** 31, 2 ** 32,
  2 ** 53 - 1, 2 ** 53, 2 ** 53 + 2, 1e12, 1e15, 1e21, 1e300, Number.MAX_VALUE, Number.MIN_VALUE, 1e-5, 1e-40, 1e-320, 1.1754943508222875e-38, -1e-5,
];

/** Any JSON value, from small to unpleasant (deep, unicode keys, big numbers). */
export const jsonValue = (): fc.Arbitrary<unknown> => fc.oneof(
  { weight: 4, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 2, arbitrary: fc.constantFrom<unknown>(...EDGE_NUMBERS, ...HOSTILE_STRINGS, null, true, false, [], {}, [64], { value: 64 }) },
  { weight: 1, arbitrary: fc.double() },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 40 }).map((d) => nest(64, d)) },
);

function nest(value: unknown, depth: number): unknown {
  let v = value;
  for (let i = 0; i < depth; i++) v = i % 2 === 0 ? [v] : { x: v };
  return v;
}

/** A config the reader must accept: small shapes, every optional field sometimes present. */
export const validParams = (layers: { max: number } = { max: 8 }): fc.Arbitrary<Params> => fc.record({
  n_layers: fc.integer({ min: 1, max: layers.max }),
  n_kv_heads: fc.integer({ min: 1, max: 4 }),
  group: fc.integer({ min: 1, max: 4 }),
  half_head_dim: fc.integer({ min: 1, max: 64 }),
  dim: fc.integer({ min: 1, max: 512 }),
  hidden_dim: fc.integer({ min: 1, max: 1024 }),
  vocab_size: fc.integer({ min: 1, max: 4096 }),
  norm_eps: fc.oneof(fc.constantFrom(1e-5, 1e-6, 0.5, 1e-30), fc.double({ min: 1.2e-38, max: 0.99, noNaN: true })),
  rope_theta: fc.option(fc.oneof(fc.constantFrom(1e4, 1e6, 1e8, 1, 999999999999.9), fc.double({ min: 1, max: 1e12, maxExcluded: true, noNaN: true }))),
  window: fc.oneof(
    fc.constant(undefined), fc.constant(null), fc.integer({ min: 1, max: 1 << 16 }),
    fc.array(fc.option(fc.integer({ min: 1, max: 4096 })), { minLength: 1, maxLength: 4 }),
  ),
  old_spelling: fc.boolean(),
  moe: fc.option(fc.integer({ min: 1, max: 4 }).chain((e) => fc.record({ num_experts: fc.constant(e), num_experts_per_tok: fc.integer({ min: 1, max: e }) }))),
  tied: fc.option(fc.boolean()),
  max_seq_len: fc.option(fc.integer({ min: 1, max: 1 << 20 })),
  max_batch_size: fc.option(fc.integer({ min: 0, max: 64 })),
  head_dim_absent: fc.boolean(),
}).map((r) => {
  const n_heads = r.n_kv_heads * r.group;
  const head_dim = 2 * r.half_head_dim;
  const p: Params = {
    dim: r.head_dim_absent ? n_heads * head_dim : r.dim, n_layers: r.n_layers, hidden_dim: r.hidden_dim, n_heads, n_kv_heads: r.n_kv_heads,
    norm_eps: r.norm_eps, vocab_size: r.vocab_size,
  };
  if (!r.head_dim_absent) p.head_dim = head_dim;
  if (r.rope_theta !== null) p.rope_theta = r.rope_theta;
  if (r.window !== undefined) {
    // A list must repeat evenly over the layers: cut it to a divisor of n_layers.
    let w = r.window;
    if (Array.isArray(w)) {
      let len = Math.min(w.length, r.n_layers);
      while (r.n_layers % len !== 0) len--;
      w = w.slice(0, len);
    }
    p[r.old_spelling ? '_sliding_window' : 'sliding_window'] = w;
  }
  if (r.moe !== null) p.moe = r.moe;
  if (r.tied !== null) p.tied_embeddings = r.tied;
  if (r.max_seq_len !== null) p.max_seq_len = r.max_seq_len;
  if (r.max_batch_size !== null) p.max_batch_size = r.max_batch_size;
  return p;
});

/** Keys the reader does not know: they are reported and ignored, whatever their name or value. */
export const unknownKey = (): fc.Arbitrary<string> => fc.oneof(
  fc.constantFrom('tied_embedding', 'model_name', 'torch_dtype', 'Dim', 'dim ', '__proto__', 'constructor', 'toString', '', '"', '\\', '\u0000', ...HOSTILE_STRINGS),
  fc.string({ unit: 'grapheme', maxLength: 20 }),
  fc.string({ unit: 'binary', maxLength: 20 }),
);

export type Mutation =
  | { kind: 'delete'; field: string }
  | { kind: 'set'; field: string; value: unknown }
  | { kind: 'extra'; key: string; value: unknown };

export const mutation = (): fc.Arbitrary<Mutation> => fc.oneof(
  fc.record({ kind: fc.constant('delete' as const), field: fc.constantFrom(...NUMERIC_FIELDS, 'sliding_window', 'moe') }),
  // Boundary numbers in number fields: most of what a validator gets wrong is at an edge.
  fc.record({ kind: fc.constant('set' as const), field: fc.constantFrom(...NUMERIC_FIELDS), value: fc.constantFrom<unknown>(...EDGE_NUMBERS) }),
  fc.record({ kind: fc.constant('set' as const), field: fc.constantFrom(...NUMERIC_FIELDS), value: fc.oneof(fc.integer({ min: -4, max: 1 << 24 }), fc.double({ noNaN: true })) }),
  fc.record({
    kind: fc.constant('set' as const),
    field: fc.constantFrom(...NUMERIC_FIELDS, 'sliding_window', '_sliding_window', 'moe', 'tied_embeddings', 'model_type', 'lora', 'quantization', 'yarn', 'vision_encoder'),
    value: jsonValue(),
  }),
  fc.record({ kind: fc.constant('set' as const), field: fc.constant('moe'), value: fc.record({ num_experts: jsonValue(), num_experts_per_tok: jsonValue() }, { requiredKeys: [] }) }),
  fc.record({ kind: fc.constant('set' as const), field: fc.constantFrom('sliding_window', '_sliding_window'), value: fc.array(jsonValue(), { maxLength: 6 }) }),
  fc.record({ kind: fc.constant('extra' as const), key: unknownKey(), value: jsonValue() }),
);

export function applyMutations(base: Params, mutations: readonly Mutation[]): Params {
  // JSON.parse, not a spread: a "__proto__" key must become an own property, as it does in a file.
  const p = JSON.parse(JSON.stringify(base)) as Params;
  for (const m of mutations) {
    if (m.kind === 'delete') delete p[m.field];
    else Object.defineProperty(p, m.kind === 'set' ? m.field : m.key, { value: m.value, enumerable: true, writable: true, configurable: true });
  }
  return p;
}

/**
 * Ways to write a config object as text that JSON.stringify would not produce: each says what the
 * reader must answer (undefined: the same as for the object itself).
 */
export type TextForm =
  | { kind: 'plain'; indent: number }
  | { kind: 'duplicate'; key: string; value: unknown; nested: boolean }
  | { kind: 'python-nan'; token: 'NaN' | 'Infinity' | '-Infinity'; field: string }
  | { kind: 'bom' }
  | { kind: 'truncated'; at: number }
  | { kind: 'deep'; depth: number };

export const textForm = (): fc.Arbitrary<TextForm> => fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('plain' as const), indent: fc.constantFrom(0, 2, 4) }) },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('duplicate' as const),
      key: fc.oneof(fc.constantFrom<string>(...NUMERIC_FIELDS, 'moe', 'sliding_window'), unknownKey()),
      value: jsonValue(),
      nested: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('python-nan' as const), token: fc.constantFrom('NaN' as const, 'Infinity' as const, '-Infinity' as const), field: fc.constantFrom(...NUMERIC_FIELDS) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('bom' as const) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('truncated' as const), at: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('deep' as const), depth: fc.integer({ min: 64, max: 100_000 }) }) },
);

/** What the reader must answer for the text, beyond what it answers for the object. */
export type Expectation =
  | { kind: 'as-object' }
  | { kind: 'duplicate'; field: string }
  | { kind: 'syntax'; contains: string }
  | { kind: 'depth' };

/** Writes `p` as text of the given form, and what the reader must make of it. */
export function writeText(p: Params, form: TextForm): { text: string; expect: Expectation } {
  switch (form.kind) {
    case 'plain':
      return { text: JSON.stringify(p, null, form.indent), expect: { kind: 'as-object' } };
    case 'bom':
      // A byte-order mark is not JSON: parseParamsText refuses it (loadModelConfig's UTF-8 decoder drops it first).
      return { text: `\ufeff${JSON.stringify(p)}`, expect: { kind: 'syntax', contains: 'byte-order mark' } };
    case 'duplicate': {
      const member = `${JSON.stringify(form.key)}: ${JSON.stringify(form.value) ?? 'null'}`;
      if (form.nested) {
        // Inside "moe": the same key twice in that object.
        const inner = `{${member}, ${member}}`;
        const rest = JSON.stringify({ ...p, moe: undefined }).slice(1, -1);
        return { text: `{${rest}${rest === '' ? '' : ', '}"moe": ${inner}}`, expect: { kind: 'duplicate', field: `moe.${form.key}` } };
      }
      const rest = JSON.stringify(p).slice(1, -1);
      return { text: `{${member}, ${rest}${rest === '' ? '' : ', '}${member}}`, expect: { kind: 'duplicate', field: form.key } };
    }
    case 'python-nan': {
      const rest = JSON.stringify({ ...p, [form.field]: undefined }).slice(1, -1);
      return { text: `{${rest}${rest === '' ? '' : ', '}"${form.field}": ${form.token}}`, expect: { kind: 'syntax', contains: `${form.token} is not a JSON number` } };
    }
    case 'truncated': {
      const full = JSON.stringify(p);
      const cut = full.slice(0, form.at % full.length);
      return { text: cut, expect: { kind: 'syntax', contains: '' } };
    }
    case 'deep':
      return { text: `{"dim": ${'['.repeat(form.depth)}1${']'.repeat(form.depth)}}`, expect: { kind: 'depth' } };
  }
}
