/**
 * Property tests of the TypeScript safetensors reader: whatever the bytes, readSafetensorsHeader
 * either returns a header whose every tensor lies inside the file, is as long as its shape and
 * dtype say and shares no byte with another, or rejects with one WeightsError line that names the
 * file. Never another exception.
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { elementCount } from '../../compiler/config/checkpoint.js';
import { DTYPE_BYTES, DTYPES } from '../../compiler/weights/dtype.js';
import { WeightsError } from '../../compiler/weights/errors.js';
import { readSafetensorsHeader, readTensorF32, type SafetensorsHeader } from '../../compiler/weights/safetensors.js';
import { HOSTILE_STRINGS } from './params-arbitraries.js';
import { fuzzParameters, fuzzTimeout } from './settings.js';

const dir = mkdtempSync(join(tmpdir(), 'mc-fuzz-safetensors-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let files = 0;

type Outcome = { header: SafetensorsHeader; error?: undefined } | { header?: undefined; error: WeightsError };

/** The reader's answer for `bytes` written to a file; any exception but a WeightsError fails the property. */
async function readBytes(bytes: Uint8Array): Promise<{ path: string; out: Outcome }> {
  const path = join(dir, `f${files++}.safetensors`);
  writeFileSync(path, bytes);
  return { path, out: await readPath(path) };
}

async function readPath(path: string): Promise<Outcome> {
  try {
    return { header: await readSafetensorsHeader(path) };
  } catch (err) {
    if (err instanceof WeightsError) return { error: err };
    throw err;
  }
}

function expectOneLine(error: WeightsError, path: string): void {
  const m = error.message;
  expect(m.startsWith(`${path}: `), m).toBe(true);
  expect(m, 'no control characters').not.toMatch(/[\u0000-\u001f\u007f]/);
  expect(m.length, m).toBeLessThan(600);
  expect(m, 'problem; fix').toContain('; ');
}

/** What an accepted header promises every later reader (the runtime hands these ranges to C++). */
async function expectSound(h: SafetensorsHeader, path: string): Promise<void> {
  expect(h.dataStart).toBe(8 + h.headerLength);
  expect(h.dataStart).toBeLessThanOrEqual(h.fileSize);
  const dataSize = h.fileSize - h.dataStart;
  const ranges: Array<[number, number]> = [];
  for (const [name, t] of h.tensors) {
    expect(t.name).toBe(name);
    expect(name).not.toBe('__metadata__');
    expect(DTYPES).toContain(t.dtype);
    for (const d of t.shape) expect(Number.isSafeInteger(d) && d >= 0).toBe(true);
    expect(t.end - t.begin).toBe(elementCount(t.shape) * DTYPE_BYTES[t.dtype]);
    expect(t.begin >= 0 && t.end <= dataSize, `${name} [${t.begin}, ${t.end}) in ${dataSize}`).toBe(true);
    expect(t.offset).toBe(h.dataStart + t.begin);
    if (t.end > t.begin) ranges.push([t.begin, t.end]);
    // Small tensors are read back; the read must succeed (the range is inside the file).
    if (t.end - t.begin <= 4096) expect((await readTensorF32(path, t)).length).toBe(elementCount(t.shape));
  }
  ranges.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < ranges.length; i++) expect(ranges[i]![0]).toBeGreaterThanOrEqual(ranges[i - 1]![1]);
  if (h.metadata !== null) for (const v of Object.values(h.metadata)) expect(typeof v).toBe('string');
}

// ---- generators ----

const U64_MAX = 2n ** 64n - 1n;

/** A JSON number as text: plain integers, but also the ones JSON.parse rounds (2^64 - 1, 1e400). */
const numberText = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0, max: 300 }).map(String) },
  {
    weight: 2,
    arbitrary: fc.constantFrom('-1', '-0', '0.5', '1e2', '1.0', String(2 ** 53), String(2 ** 53 + 1), String(U64_MAX), '18446744073709551616', '1e400', '-1e400',
      String(2 ** 31), String(2 ** 32 - 1)),
  },
  { weight: 1, arbitrary: fc.constantFrom('"8"', 'null', 'true', '[]', '{}', '"NaN"') },
);

const dtypeText = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('"F32"', '"BF16"', '"F16"') },
  { weight: 2, arbitrary: fc.constantFrom('"I8"', '"F64"', '"U8"', '"F8_E4M3"', '"BOOL"', '"f32"', '""', '"F32 "', '1', 'null', '["F32"]') },
);

const shapeText = fc.oneof(
  { weight: 6, arbitrary: fc.array(fc.integer({ min: 0, max: 8 }), { maxLength: 3 }).map((s) => JSON.stringify(s)) },
  { weight: 2, arbitrary: fc.array(numberText, { maxLength: 4 }).map((s) => `[${s.join(',')}]`) },
  { weight: 1, arbitrary: fc.constantFrom('null', '4', '"[4]"', '{}', `[${'['.repeat(100)}${']'.repeat(100)}]`) },
);

const nameText = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom('w', 'b', 'tok_embeddings.weight', 'layers.0.attention.wq.weight', '10', '0', '__metadata__', '') },
  { weight: 2, arbitrary: fc.constantFrom(...HOSTILE_STRINGS) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 12 }) },
).map((s) => JSON.stringify(s));

/** One header entry, as text: usually well-formed with chosen offsets, sometimes anything. */
const entryText = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.record({ dtype: dtypeText, shape: shapeText, offsets: fc.oneof(fc.tuple(numberText, numberText).map(([a, b]) => `[${a},${b}]`), fc.constantFrom('[]', '[0]', '[0,1,2]', 'null', '"0-4"')) })
      .map((e) => `{"dtype":${e.dtype},"shape":${e.shape},"data_offsets":${e.offsets}}`),
  },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v)) },
);

const metadataText = fc.oneof(
  fc.constant(undefined),
  fc.dictionary(fc.string({ maxLength: 6 }), fc.string({ maxLength: 6 })).map((d) => JSON.stringify(d)),
  fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v)),
);

/** A consistent file (contiguous tensors that fit), which the mutations below then break. */
const consistentTensors = fc.array(fc.record({ dtype: fc.constantFrom(...DTYPES), shape: fc.array(fc.integer({ min: 0, max: 6 }), { maxLength: 3 }) }), { maxLength: 5 })
  .map((ts) => {
    let at = 0;
    return ts.map((t, i) => {
      const bytes = elementCount(t.shape) * DTYPE_BYTES[t.dtype];
      const entry = `${JSON.stringify(`t${i}`)}:{"dtype":"${t.dtype}","shape":${JSON.stringify(t.shape)},"data_offsets":[${at},${at + bytes}]}`;
      at += bytes;
      return { entry, end: at };
    });
  });

/** How the 8-byte length is written relative to the header's true length N and the file. */
const lengthForm = fc.oneof(
  { weight: 8, arbitrary: fc.constant<LengthForm>({ kind: 'exact' }) },
  { weight: 1, arbitrary: fc.integer({ min: -8, max: 8 }).map((d): LengthForm => ({ kind: 'offset', delta: d })) },
  { weight: 1, arbitrary: fc.constantFrom<LengthForm>(...[0n, 1n, 2n ** 32n, 2n ** 53n + 1n, 2n ** 63n, U64_MAX - 7n, U64_MAX].map((v) => ({ kind: 'value' as const, value: v }))) },
);
type LengthForm = { kind: 'exact' } | { kind: 'offset'; delta: number } | { kind: 'value'; value: bigint };

interface FileCase {
  entries: string[];
  metadata: string | undefined;
  duplicate: boolean;
  topLevel: string | undefined;
  padding: number;
  length: LengthForm;
  dataBytes: number;
}

const fileCase: fc.Arbitrary<FileCase> = fc.record({
  entries: fc.oneof(
    fc.array(fc.tuple(nameText, entryText).map(([n, e]) => `${n}:${e}`), { maxLength: 5 }),
    consistentTensors.map((ts) => ts.map((t) => t.entry)),
  ),
  metadata: metadataText,
  duplicate: fc.boolean(),
  // Instead of an object: valid JSON of the wrong kind, or not JSON at all.
  topLevel: fc.oneof({ weight: 9, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.constantFrom('[]', '"x"', '1', 'null', 'true', '{', '', '\u0000', '{"a":1}{}') }),
  padding: fc.integer({ min: 0, max: 9 }),
  length: lengthForm,
  dataBytes: fc.integer({ min: 0, max: 700 }),
});

function encodeFile(c: FileCase): { bytes: Uint8Array; duplicate: string | undefined } {
  const members = [...c.entries];
  if (c.metadata !== undefined) members.unshift(`"__metadata__":${c.metadata}`);
  let duplicate: string | undefined;
  if (c.duplicate && members.length > 0) {
    members.push(members[0]!);
    duplicate = members[0]!;
  }
  const json = c.topLevel ?? `{${members.join(',')}}`;
  const header = Buffer.concat([Buffer.from(json, 'utf8'), Buffer.alloc(c.padding, 0x20)]);
  const n = BigInt(header.byteLength);
  const length = c.length.kind === 'exact' ? n : c.length.kind === 'offset' ? n + BigInt(c.length.delta) : c.length.value;
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(length < 0n ? 0n : length);
  return { bytes: Buffer.concat([prefix, header, Buffer.alloc(c.dataBytes, 0x3c)]), duplicate: c.topLevel === undefined && c.length.kind === 'exact' ? duplicate : undefined };
}

describe('safetensors reader, property-based', () => {
  it('answers any header and length with a sound header or one WeightsError line', async () => {
    let accepted = 0;
    let runs = 0;
    await fc.assert(fc.asyncProperty(fileCase, async (c) => {
      runs++;
      const { bytes, duplicate } = encodeFile(c);
      const { path, out } = await readBytes(bytes);
      if (out.error !== undefined) {
        expectOneLine(out.error, path);
      } else {
        accepted++;
        await expectSound(out.header, path);
        // A header that names a tensor twice means two different files to two readers.
        expect(duplicate, 'a duplicate key was accepted').toBeUndefined();
      }
    }), fuzzParameters(400));
    // The generator must keep reaching the checks of accepted headers, not only the refusals.
    expect(accepted / runs).toBeGreaterThan(0.03);
  }, fuzzTimeout(400, 10));

  it('refuses every header that holds a key twice, naming it', async () => {
    await fc.assert(fc.asyncProperty(consistentTensors.filter((ts) => ts.length > 0), fc.nat(), async (ts, pick) => {
      const twice = ts[pick % ts.length]!.entry;
      const json = `{${[...ts.map((t) => t.entry), twice].join(',')}}`;
      const prefix = Buffer.alloc(8);
      prefix.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
      const { path, out } = await readBytes(Buffer.concat([prefix, Buffer.from(json), Buffer.alloc(ts[ts.length - 1]!.end)]));
      expect(out.error).toBeInstanceOf(WeightsError);
      expectOneLine(out.error!, path);
      expect(out.error!.message).toMatch(/: tensor "t\d+": is listed twice in the header/);
    }), fuzzParameters(100));
  });

  it('answers random byte damage of a valid file (flips, cuts, appends) with a sound header or a WeightsError', async () => {
    const damage = fc.record({
      tensors: consistentTensors,
      flips: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
      cut: fc.option(fc.nat()),
      append: fc.integer({ min: 0, max: 16 }),
    });
    await fc.assert(fc.asyncProperty(damage, async ({ tensors, flips, cut, append }) => {
      const json = `{${tensors.map((t) => t.entry).join(',')}}`;
      const end = tensors.length === 0 ? 0 : tensors[tensors.length - 1]!.end;
      const prefix = Buffer.alloc(8);
      prefix.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
      let bytes = Buffer.concat([prefix, Buffer.from(json), Buffer.alloc(end + append, 0x41)]);
      for (const [at, byte] of flips) bytes[at % bytes.length] = byte;
      if (cut !== null) bytes = bytes.subarray(0, cut % (bytes.length + 1));
      const { path, out } = await readBytes(bytes);
      if (out.error !== undefined) expectOneLine(out.error, path);
      else await expectSound(out.header, path);
    }), fuzzParameters(300));
  }, fuzzTimeout(300, 10));
});

describe('safetensors reader, files that are not files', () => {
  const cases: Array<[string, () => string, RegExp]> = [
    ['a zero-length file', () => {
      const p = join(dir, 'zero.safetensors');
      writeFileSync(p, '');
      return p;
    }, /: is empty \(0 bytes\); regenerate or re-download/],
    ['a directory', () => {
      const p = join(dir, 'a-dir.safetensors');
      mkdirSync(p, { recursive: true });
      return p;
    }, /: is a directory, not a safetensors file; pass the \.safetensors file inside it/],
    ['a named pipe (reading it would block forever)', () => {
      const p = join(dir, 'fifo.safetensors');
      execFileSync('mkfifo', [p]);
      return p;
    }, /: is not a regular file; pass a \.safetensors file/],
    ['a symlink loop', () => {
      const p = join(dir, 'loop.safetensors');
      symlinkSync(p, p);
      return p;
    }, /: cannot be read \(ELOOP\); check the path and its permissions/],
    ['a path through a regular file', () => {
      const p = join(dir, 'plain');
      writeFileSync(p, 'x');
      return join(p, 'consolidated.safetensors');
    }, /: cannot be read \(ENOTDIR\)/],
  ];
  for (const [what, make, message] of cases) {
    it(`refuses ${what} with one line naming it`, async () => {
      const path = make();
      const out = await readPath(path);
      expect(out.error).toBeInstanceOf(WeightsError);
      expectOneLine(out.error!, path);
      expect(out.error!.message).toMatch(message);
    });
  }

  it('refuses a header nested deeper than 64 levels, and keeps the input\'s control characters out of a JSON error', async () => {
    const deep = `{"w":{"dtype":"F32","shape":${'['.repeat(200_000)}${']'.repeat(200_000)},"data_offsets":[0,0]}}`;
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(deep.length));
    const a = await readBytes(Buffer.concat([prefix, Buffer.from(deep)]));
    expect(a.out.error?.message).toMatch(/: tensor "w": nests deeper than 64 levels;/);
    const bad = '{"w": \u001b[2J}';
    prefix.writeBigUInt64LE(BigInt(bad.length));
    const b = await readBytes(Buffer.concat([prefix, Buffer.from(bad)]));
    expect(b.out.error?.message).toMatch(/header: is not valid JSON/);
    expect(b.out.error?.message).not.toContain('\u001b');
  });
});
