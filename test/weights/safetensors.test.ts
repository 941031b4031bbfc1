import { mkdtemp, mkdir, open, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeFromF32 } from '../../compiler/weights/dtype.js';
import { WeightsError } from '../../compiler/weights/errors.js';
import { readSafetensorsHeader, readTensorF32, SafetensorsWriter, type TensorSpec } from '../../compiler/weights/safetensors.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mc-safetensors-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const SPECS: TensorSpec[] = [
  { name: 'b.weight', dtype: 'F32', shape: [2, 3] },
  { name: '10', dtype: 'BF16', shape: [5] }, // integer-like: a JS object would reorder it
  { name: 'empty', dtype: 'F16', shape: [0, 4] },
  { name: 'a.scalar', dtype: 'F16', shape: [] },
];
const VALUES: Record<string, number[]> = {
  'b.weight': [1, -2, 3.5, 0.25, -0, 2 ** -10], // exact in every dtype, so read-back compares exactly
  '10': [1, 2, -3, 0.5, 256],
  empty: [],
  'a.scalar': [-1.5],
};

async function writeSample(path: string): Promise<void> {
  const writer = await SafetensorsWriter.create(path, SPECS, { metadata: { format: 'pt' } });
  for (const spec of SPECS) {
    const bytes = encodeFromF32(spec.dtype, Float32Array.from(VALUES[spec.name]!));
    // Split each tensor in two chunks: partial writes are the normal streaming case.
    const half = Math.floor(bytes.byteLength / 4) * 2;
    await writer.write(spec.name, bytes.subarray(0, half));
    await writer.write(spec.name, bytes.subarray(half));
  }
  await writer.close();
}

/** A file from raw parts: the 8-byte length (default: the header's), the header text, the data. */
async function rawFile(name: string, header: string, data: Uint8Array = new Uint8Array(0), length?: bigint): Promise<string> {
  const path = join(dir, name);
  const headerBytes = Buffer.from(header, 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(length ?? BigInt(headerBytes.byteLength));
  await writeFile(path, Buffer.concat([prefix, headerBytes, data]));
  return path;
}

describe('SafetensorsWriter and readSafetensorsHeader', () => {
  it('writes a file that reads back with the same names, order, dtypes, shapes and values', async () => {
    const path = join(dir, 'sample.safetensors');
    await writeSample(path);
    const header = await readSafetensorsHeader(path);
    expect([...header.tensors.keys()]).toEqual(SPECS.map((s) => s.name));
    for (const spec of SPECS) {
      const info = header.tensors.get(spec.name)!;
      expect(info.dtype).toBe(spec.dtype);
      expect(info.shape).toEqual(spec.shape);
      expect(Array.from(await readTensorF32(path, info))).toEqual(VALUES[spec.name]);
    }
    expect(header.metadata).toEqual({ format: 'pt' });
    expect(header.dataStart).toBe(8 + header.headerLength);
  });

  it('pads the header with spaces to a multiple of 8 bytes and lays tensors out contiguously', async () => {
    const path = join(dir, 'sample.safetensors');
    await writeSample(path);
    const header = await readSafetensorsHeader(path);
    expect(header.headerLength % 8).toBe(0);
    const bytes = await readFile(path);
    const text = bytes.subarray(8, 8 + header.headerLength).toString('utf8');
    expect(text.trimEnd().endsWith('}')).toBe(true);
    expect(/^ *$/.test(text.slice(text.trimEnd().length))).toBe(true);
    let end = 0;
    for (const info of header.tensors.values()) {
      expect(info.begin).toBe(end);
      end = info.end;
    }
    expect(header.fileSize).toBe(header.dataStart + end);
  });

  it('refuses a tensor written out of order', async () => {
    const writer = await SafetensorsWriter.create(join(dir, 'order.safetensors'), SPECS);
    await expect(writer.write('10', new Uint8Array(10))).rejects.toThrow(/tensor "10": written out of order: tensor "b.weight" is next, with 24 bytes still to write/);
    await writer.abort();
  });

  it('refuses more bytes than a tensor holds', async () => {
    const writer = await SafetensorsWriter.create(join(dir, 'long.safetensors'), SPECS);
    await expect(writer.write('b.weight', new Uint8Array(28))).rejects.toThrow(/tensor "b.weight": got 28 bytes but only 24 remain/);
    await writer.abort();
  });

  it('refuses to close while a tensor is incomplete', async () => {
    const writer = await SafetensorsWriter.create(join(dir, 'short.safetensors'), SPECS);
    await writer.write('b.weight', new Uint8Array(24));
    await writer.write('10', new Uint8Array(4));
    await expect(writer.close()).rejects.toThrow(/tensor "10": was not completely written before close\(\)/);
  });

  it('refuses duplicate names and unsupported dtypes up front', async () => {
    await expect(SafetensorsWriter.create(join(dir, 'dup.safetensors'), [SPECS[0]!, SPECS[0]!])).rejects.toThrow(/is listed twice/);
    await expect(SafetensorsWriter.create(join(dir, 'i8.safetensors'), [{ name: 'x', dtype: 'I8' as 'F32', shape: [1] }]))
      .rejects.toThrow(/dtype "I8" is not supported/);
  });
});

describe('readSafetensorsHeader on hostile files', () => {
  const f32x4 = new Uint8Array(16);

  /** Each case makes a file and names the one-line error it must give. */
  const cases: Array<{ what: string; make: () => Promise<string>; error: RegExp }> = [
    {
      what: 'a truncated file',
      make: async () => {
        const path = join(dir, 'truncated.safetensors');
        await writeSample(path);
        const { fileSize } = await readSafetensorsHeader(path);
        await truncate(path, fileSize - 1);
        return path;
      },
      error: /tensor "a\.scalar": data_offsets \[\d+, \d+\] run past the end of the data section \(\d+ bytes\)/,
    },
    {
      what: 'a header length larger than the file',
      make: () => rawFile('long-header.safetensors', '{}', new Uint8Array(0), 1000n),
      error: /header length: declares a 1000-byte header but only 2 bytes follow the 8-byte length/,
    },
    {
      what: 'an 8-byte header length near 2^64',
      make: () => rawFile('huge-length.safetensors', '{}', new Uint8Array(0), 2n ** 64n - 16n),
      error: /header length: declares a 18446744073709551600-byte header/,
    },
    {
      what: 'a header that is not JSON',
      make: () => rawFile('not-json.safetensors', '{"a": {"dtype": "F32",'),
      error: /header: is not valid JSON/,
    },
    {
      what: 'a header that is not UTF-8',
      make: async () => {
        const path = join(dir, 'not-utf8.safetensors');
        await writeFile(path, Buffer.concat([Buffer.from([4, 0, 0, 0, 0, 0, 0, 0]), Buffer.from([0x7b, 0xff, 0xfe, 0x7d])]));
        return path;
      },
      error: /header: is not valid UTF-8/,
    },
    {
      what: 'a header that is not an object',
      make: () => rawFile('array.safetensors', '[1, 2]'),
      error: /header: must be a JSON object \(got \[1,2\]\)/,
    },
    {
      what: 'offsets out of range',
      make: () => rawFile('range.safetensors', '{"w": {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]}}', f32x4),
      error: /tensor "w": data_offsets \[16, 32\] run past the end of the data section \(16 bytes\)/,
    },
    {
      what: 'overlapping tensors',
      make: () => rawFile('overlap.safetensors',
        '{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}', f32x4),
      error: /tensor "b": data_offsets \[4, 12\] overlap tensor "a" \[0, 8\]/,
    },
    {
      what: 'data_offsets that disagree with shape × dtype size',
      make: () => rawFile('size.safetensors', '{"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}', f32x4),
      error: /tensor "w": data_offsets \[0, 12\] hold 12 bytes but shape \[2,2\] of F32 needs 16/,
    },
    {
      what: 'an unsupported dtype',
      make: () => rawFile('int8.safetensors', '{"q": {"dtype": "I8", "shape": [16], "data_offsets": [0, 16]}}', f32x4),
      error: /tensor "q": dtype "I8" is not supported \(only F32, BF16, F16\); convert the checkpoint/,
    },
    {
      what: 'begin after end',
      make: () => rawFile('reversed.safetensors', '{"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}}', f32x4),
      error: /tensor "w": data_offsets \[8, 4\] end before they begin/,
    },
    {
      what: 'a negative dimension',
      make: () => rawFile('negative.safetensors', '{"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}', f32x4),
      error: /tensor "w": shape must be a list of non-negative integers \(got \[-4\]\)/,
    },
    {
      what: 'offsets too large to be exact',
      make: () => rawFile('inexact.safetensors', '{"w": {"dtype": "F32", "shape": [4], "data_offsets": [18446744073709551615, 16]}}', f32x4),
      error: /tensor "w": data_offsets must be \[begin, end\], two non-negative integers below 2\^53 \(no file is that large\)/,
    },
    {
      what: 'a __metadata__ value that is not a string',
      make: () => rawFile('metadata.safetensors', '{"__metadata__": {"format": 1}}'),
      error: /__metadata__\.format: must be a string \(got 1\)/,
    },
    {
      what: 'an entry that is not an object',
      make: () => rawFile('entry.safetensors', '{"w": 3}'),
      error: /tensor "w": must be an object with dtype, shape, data_offsets \(got 3\)/,
    },
    {
      what: 'a zero-length file',
      make: async () => {
        const path = join(dir, 'zero.safetensors');
        await writeFile(path, '');
        return path;
      },
      error: /zero\.safetensors: is empty \(0 bytes\)/,
    },
    {
      what: 'a file shorter than the header length',
      make: async () => {
        const path = join(dir, 'tiny.safetensors');
        await writeFile(path, Buffer.from([1, 2, 3]));
        return path;
      },
      error: /is 3 bytes, shorter than the 8-byte header length/,
    },
    {
      what: 'a directory',
      make: async () => {
        const path = join(dir, 'model-dir');
        await mkdir(path, { recursive: true });
        return path;
      },
      error: /model-dir: is a directory, not a safetensors file; pass the \.safetensors file inside it/,
    },
    {
      what: 'a missing file',
      make: async () => join(dir, 'nowhere.safetensors'),
      error: /nowhere\.safetensors: no such file/,
    },
    {
      what: 'a header above 100 MiB',
      make: async () => {
        const path = await rawFile('big-header.safetensors', '{}', new Uint8Array(0), 101n << 20n);
        await truncate(path, 102 << 20); // sparse: costs no disk
        return path;
      },
      error: /header length: declares a 105906176-byte header, above the 104857600-byte limit/,
    },
  ];

  for (const c of cases) {
    it(`rejects ${c.what} with one line naming the file and the problem`, async () => {
      const path = await c.make();
      const error = await readSafetensorsHeader(path).then(() => undefined, (e: unknown) => e);
      expect(error).toBeInstanceOf(WeightsError);
      const message = (error as WeightsError).message;
      expect(message.startsWith(path)).toBe(true);
      expect(message).not.toContain('\n');
      expect(message).toMatch(c.error);
    });
  }

  it('reports a tensor that runs past a file truncated after its header was read', async () => {
    const path = join(dir, 'shrinking.safetensors');
    await writeSample(path);
    const header = await readSafetensorsHeader(path);
    const handle = await open(path, 'r+');
    await handle.truncate(header.dataStart + 4);
    await handle.close();
    await expect(readTensorF32(path, header.tensors.get('b.weight')!)).rejects.toThrow(/tensor "b\.weight": the file ends at byte/);
  });
});
