/**
 * Broken and hostile safetensors files for the bad-input tests: well-formed files with the wrong
 * tensors (written with SafetensorsWriter), and byte surgery on a valid file's header and length.
 */
import { readFile, truncate, writeFile } from 'node:fs/promises';
import { encodeFromF32, type Dtype } from '../../compiler/weights/dtype.js';
import { readSafetensorsHeader, readTensorF32, SafetensorsWriter } from '../../compiler/weights/safetensors.js';

export interface StoredTensor {
  name: string;
  dtype: Dtype;
  shape: number[];
  /** The values, as float32 (written back in `dtype`). */
  values: Float32Array;
}

/** Every tensor of a safetensors file, in file order. */
export async function readTensors(path: string): Promise<StoredTensor[]> {
  const header = await readSafetensorsHeader(path);
  const out: StoredTensor[] = [];
  for (const info of header.tensors.values()) {
    out.push({ name: info.name, dtype: info.dtype, shape: [...info.shape], values: await readTensorF32(path, info) });
  }
  return out;
}

/** A well-formed safetensors file holding exactly `tensors` (each stored in its own dtype). */
export async function writeTensors(path: string, tensors: readonly StoredTensor[]): Promise<void> {
  const writer = await SafetensorsWriter.create(path, tensors.map(({ name, dtype, shape }) => ({ name, dtype, shape })), { metadata: { format: 'pt' } });
  for (const t of tensors) await writer.write(t.name, encodeFromF32(t.dtype, t.values));
  await writer.close();
}

/** Rewrites a file's tensors through `edit` (drop, add, reshape, retype). */
export async function editTensors(path: string, edit: (tensors: StoredTensor[]) => StoredTensor[]): Promise<void> {
  await writeTensors(path, edit(await readTensors(path)));
}

type HeaderJson = Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] } | Record<string, string>>;

/**
 * Byte surgery on the JSON header: `edit` changes the parsed header, which is written back (padded
 * to 8 bytes, with a new length) in front of the unchanged data section. No validation on the way.
 */
export async function editHeader(path: string, edit: (header: HeaderJson) => void): Promise<void> {
  const bytes = await readFile(path);
  const length = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + length).toString('utf8')) as HeaderJson;
  edit(header);
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Buffer.alloc(Math.ceil(json.byteLength / 8) * 8, 0x20);
  json.copy(padded);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(padded.byteLength));
  await writeFile(path, Buffer.concat([prefix, padded, bytes.subarray(8 + length)]));
}

/** Cuts the file to `bytes` bytes (as an interrupted download does). */
export async function truncateTo(path: string, bytes: number): Promise<void> {
  await truncate(path, bytes);
}

/**
 * Re-pads the header so that its length is ≡ `remainder` (mod 8): the data section then starts at
 * an unaligned file offset. Legal safetensors (the format requires no alignment), unlike what the
 * official writer produces.
 */
export async function misalignDataSection(path: string, remainder: number): Promise<void> {
  const bytes = await readFile(path);
  const length = Number(bytes.readBigUInt64LE(0));
  const json = bytes.subarray(8, 8 + length).toString('utf8').trimEnd();
  let newLength = Buffer.byteLength(json, 'utf8');
  while (newLength % 8 !== remainder) newLength++;
  const header = Buffer.alloc(newLength, 0x20);
  header.write(json, 0, 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(newLength));
  await writeFile(path, Buffer.concat([prefix, header, bytes.subarray(8 + length)]));
}
