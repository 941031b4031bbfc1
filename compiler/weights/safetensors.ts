import { open, stat, type FileHandle } from 'node:fs/promises';
import { showValue } from '../errors.js';
import { elementCount } from '../config/checkpoint.js';
import { jsonPath, parseStrictJson, StrictJsonError } from '../config/strict-json.js';
import { DTYPE_BYTES, DTYPES, decodeToF32, isDtype, type Dtype } from './dtype.js';
import { WeightsError } from './errors.js';

/**
 * safetensors: an 8-byte little-endian header length N, N bytes of JSON (name → dtype, shape,
 * data_offsets relative to the data section), then the data. The reader treats the file as hostile:
 * every number is checked before it is used, and every failure is a one-line WeightsError.
 */

/** The reference implementation refuses headers above 100 MB; so do we (real ones are < 1 MB). */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export interface TensorInfo {
  name: string;
  dtype: Dtype;
  /** Row-major shape as stored. */
  shape: number[];
  /** Byte range inside the data section (data_offsets). */
  begin: number;
  end: number;
  /** Absolute file position of the first byte (dataStart + begin). */
  offset: number;
}

export interface SafetensorsHeader {
  path: string;
  /** N: length of the JSON header in bytes (padding included). */
  headerLength: number;
  /** 8 + N: where the data section starts. */
  dataStart: number;
  fileSize: number;
  /** In the order of their data in the file (header order for files this writer made). */
  tensors: Map<string, TensorInfo>;
  /** The optional __metadata__ string map (null when absent). */
  metadata: Record<string, string> | null;
}

const FIX_FILE = 'regenerate or re-download the checkpoint (it is truncated, corrupt or not a safetensors file)';

function tensorField(name: string): string {
  return `tensor ${showValue(name)}`;
}

export async function readSafetensorsHeader(path: string): Promise<SafetensorsHeader> {
  const fileSize = await regularFileSize(path);
  if (fileSize === 0) throw new WeightsError(path, undefined, 'is empty (0 bytes)', FIX_FILE);
  if (fileSize < 8) {
    throw new WeightsError(path, undefined, `is ${fileSize} bytes, shorter than the 8-byte header length that starts a safetensors file`, FIX_FILE);
  }
  const handle = await openForReading(path);
  try {
    const lengthBytes = Buffer.alloc(8);
    await readFully(handle, lengthBytes, 0, path, 'header length');
    const declared = lengthBytes.readBigUInt64LE(0);
    if (declared > BigInt(fileSize - 8)) {
      throw new WeightsError(path, 'header length',
        `declares a ${declared}-byte header but only ${fileSize - 8} bytes follow the 8-byte length`, FIX_FILE);
    }
    if (declared > BigInt(MAX_HEADER_BYTES)) {
      throw new WeightsError(path, 'header length', `declares a ${declared}-byte header, above the ${MAX_HEADER_BYTES}-byte limit`, FIX_FILE);
    }
    const headerLength = Number(declared);
    const headerBytes = Buffer.alloc(headerLength);
    await readFully(handle, headerBytes, 8, path, 'header');
    const json = parseHeaderJson(path, headerBytes);
    const dataStart = 8 + headerLength;
    const { tensors, metadata } = validateHeader(path, json, dataStart, fileSize - dataStart);
    return { path, headerLength, dataStart, fileSize, tensors, metadata };
  } finally {
    await handle.close();
  }
}

/** Size of `path`, which must be a regular file; clear errors for missing files and directories. */
async function regularFileSize(path: string): Promise<number> {
  let info;
  try {
    info = await stat(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new WeightsError(path, undefined, 'no such file', 'pass the path of a .safetensors file');
    throw new WeightsError(path, undefined, `cannot be read (${code ?? String(err)})`, 'check the path and its permissions');
  }
  if (info.isDirectory()) {
    throw new WeightsError(path, undefined, 'is a directory, not a safetensors file', 'pass the .safetensors file inside it (e.g. consolidated.safetensors)');
  }
  if (!info.isFile()) throw new WeightsError(path, undefined, 'is not a regular file', 'pass a .safetensors file');
  return info.size;
}

async function openForReading(path: string): Promise<FileHandle> {
  try {
    return await open(path, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new WeightsError(path, undefined, `cannot be opened (${code ?? String(err)})`, 'check the path and its permissions');
  }
}

/** Node caps one read at 2 GiB - 1; larger ranges are read in pieces. */
const MAX_READ = 1 << 30;

/** Fills `into` from `position`; a short file is a WeightsError, not a silent partial read. */
export async function readFully(handle: FileHandle, into: Uint8Array, position: number, path: string, what: string): Promise<void> {
  let done = 0;
  while (done < into.byteLength) {
    const length = Math.min(into.byteLength - done, MAX_READ);
    const { bytesRead } = await handle.read(into, done, length, position + done);
    if (bytesRead === 0) {
      throw new WeightsError(path, what, `the file ends at byte ${position + done}, before the ${into.byteLength} bytes that start at ${position}`, FIX_FILE);
    }
    done += bytesRead;
  }
}

function parseHeaderJson(path: string, bytes: Uint8Array): unknown {
  let text: string;
  try {
    // ignoreBOM: a byte-order mark stays in the text and is refused as JSON, as the reference
    // reader (serde_json) refuses it, rather than silently dropped.
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new WeightsError(path, 'header', 'is not valid UTF-8', FIX_FILE);
  }
  try {
    return parseStrictJson(text);
  } catch (err) {
    if (!(err instanceof StrictJsonError)) throw err;
    const p = err.problem;
    if (p.kind === 'syntax') throw new WeightsError(path, 'header', `is not valid JSON (${p.reason})`, FIX_FILE);
    // Named by the top-level entry it is in: a tensor, or __metadata__.
    const top = p.at.length > 0 ? String(p.at[0]) : p.kind === 'duplicate' ? p.key : undefined;
    const field = top === undefined ? 'header' : top === '__metadata__' ? '__metadata__' : tensorField(top);
    if (p.kind === 'depth') throw new WeightsError(path, field, `nests deeper than ${p.limit} levels`, FIX_FILE);
    // JSON.parse would keep the last entry silently, other readers the first: one file, two sets of weights.
    const problem = p.at.length === 0 ? 'is listed twice in the header' : `holds ${showValue(jsonPath([...p.at.slice(1), p.key]))} twice`;
    throw new WeightsError(path, field, problem, FIX_FILE);
  }
}

function validateHeader(path: string, json: unknown, dataStart: number, dataSize: number) {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new WeightsError(path, 'header', `must be a JSON object (got ${showValue(json)})`, FIX_FILE);
  }
  let metadata: Record<string, string> | null = null;
  const entries: TensorInfo[] = [];
  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') metadata = validateMetadata(path, entry);
    else entries.push(validateEntry(path, name, entry, dataStart));
  }
  // File order: JSON.parse loses the header's key order (integer-like names move first), and the
  // data order is what a reader streams through anyway. The sort is stable for empty tensors.
  entries.sort((a, b) => a.begin - b.begin);
  checkRanges(path, entries, dataSize);
  return { tensors: new Map(entries.map((t) => [t.name, t])), metadata };
}

function validateMetadata(path: string, entry: unknown): Record<string, string> {
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
    throw new WeightsError(path, '__metadata__', `must be an object of strings (got ${showValue(entry)})`, FIX_FILE);
  }
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(entry as Record<string, unknown>)) {
    if (typeof value !== 'string') {
      throw new WeightsError(path, `__metadata__.${key}`, `must be a string (got ${showValue(value)})`, FIX_FILE);
    }
    out[key] = value;
  }
  return out;
}

function validateEntry(path: string, name: string, entry: unknown, dataStart: number): TensorInfo {
  const field = tensorField(name);
  const fail = (problem: string, fix = FIX_FILE): never => {
    throw new WeightsError(path, field, problem, fix);
  };
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) fail(`must be an object with dtype, shape, data_offsets (got ${showValue(entry)})`);
  const e = entry as Record<string, unknown>;
  if (typeof e.dtype !== 'string') fail(`dtype must be a string (got ${showValue(e.dtype)})`);
  if (!isDtype(e.dtype)) {
    fail(`dtype ${showValue(e.dtype)} is not supported (only ${DTYPES.join(', ')})`, 'convert the checkpoint to bf16, f16 or f32 (quantized and integer tensors cannot be compiled)');
  }
  const dtype = e.dtype as Dtype;
  const shape = e.shape;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
    fail(`shape must be a list of non-negative integers (got ${showValue(shape)})`);
  }
  const dims = shape as number[];
  const elements = elementCount(dims);
  const bytes = elements * DTYPE_BYTES[dtype];
  if (!Number.isSafeInteger(bytes)) fail(`shape ${showValue(dims)} is too large to address`);
  const offsets = e.data_offsets;
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && (o as number) >= 0)) {
    // Integers past 2^53 are named as such: "non-negative integers" alone reads as wrong for [2^60, ...].
    const huge = Array.isArray(offsets) && offsets.some((o) => typeof o === 'number' && Number.isInteger(o) && !Number.isSafeInteger(o));
    fail(`data_offsets must be [begin, end], two non-negative integers${huge ? ' below 2^53 (no file is that large)' : ''} (got ${showValue(offsets)})`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) fail(`data_offsets [${begin}, ${end}] end before they begin`);
  if (end - begin !== bytes) {
    fail(`data_offsets [${begin}, ${end}] hold ${end - begin} bytes but shape ${showValue(dims)} of ${dtype} needs ${bytes}`);
  }
  return { name, dtype, shape: dims, begin, end, offset: dataStart + begin };
}

/**
 * Every tensor lies inside the data section, and no two share bytes (empty tensors hold none, so
 * they cannot overlap). `sorted` is in order of begin.
 */
function checkRanges(path: string, sorted: readonly TensorInfo[], dataSize: number): void {
  for (const t of sorted) {
    if (t.end > dataSize) {
      throw new WeightsError(path, tensorField(t.name), `data_offsets [${t.begin}, ${t.end}] run past the end of the data section (${dataSize} bytes)`, FIX_FILE);
    }
  }
  const nonEmpty = sorted.filter((t) => t.end > t.begin);
  for (let i = 1; i < nonEmpty.length; i++) {
    const prev = nonEmpty[i - 1]!;
    const cur = nonEmpty[i]!;
    if (cur.begin < prev.end) {
      throw new WeightsError(path, tensorField(cur.name),
        `data_offsets [${cur.begin}, ${cur.end}] overlap ${tensorField(prev.name)} [${prev.begin}, ${prev.end}]`, FIX_FILE);
    }
  }
}

/** Bytes per positioned read when streaming a tensor (a multiple of every element size). */
const READ_CHUNK = 16 << 20;

/**
 * Reads one tensor (described by readSafetensorsHeader) and converts it to float32, with
 * positioned reads of the tensor's range only. For tests and the float64 reference; the runtime
 * maps weights natively.
 */
export async function readTensorF32(path: string, info: TensorInfo): Promise<Float32Array> {
  const count = elementCount(info.shape);
  if (count * 4 > 2 ** 32 - 1) {
    throw new WeightsError(path, tensorField(info.name), `has ${count} elements, too many for one Float32Array`, 'read it natively (mmap) instead');
  }
  const out = new Float32Array(count);
  const size = DTYPE_BYTES[info.dtype];
  const handle = await openForReading(path);
  try {
    const chunk = new Uint8Array(Math.min(READ_CHUNK, count * size));
    for (let element = 0; element < count;) {
      const n = Math.min(count - element, chunk.byteLength / size);
      const bytes = chunk.subarray(0, n * size);
      await readFully(handle, bytes, info.offset + element * size, path, tensorField(info.name));
      decodeToF32(info.dtype, bytes, out.subarray(element, element + n));
      element += n;
    }
  } finally {
    await handle.close();
  }
  return out;
}

// ---- writer ----

export interface TensorSpec {
  name: string;
  dtype: Dtype;
  shape: readonly number[];
}

interface PlannedTensor extends TensorSpec {
  begin: number;
  end: number;
}

/**
 * Writes a safetensors file tensor by tensor without holding it in memory. The layout is fixed up
 * front from the full tensor list (given order, contiguous), so the header is written first and
 * data is appended in chunks; each chunk is checked against the tensor it must belong to.
 */
export class SafetensorsWriter {
  private current = 0;
  private written = 0;
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    private readonly plan: PlannedTensor[],
    /** Bytes of the whole file. */
    readonly totalBytes: number,
    private position: number,
  ) {}

  /** Creates (truncates) `path` and writes the header. `metadata` becomes __metadata__, e.g. {format: 'pt'}. */
  static async create(path: string, tensors: readonly TensorSpec[], options: { metadata?: Record<string, string> } = {}): Promise<SafetensorsWriter> {
    const plan = planLayout(path, tensors);
    const header = encodeHeader(plan, options.metadata);
    const dataBytes = plan.length === 0 ? 0 : plan[plan.length - 1]!.end;
    let handle: FileHandle;
    try {
      handle = await open(path, 'w');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new WeightsError(path, undefined, `cannot be created (${code ?? String(err)})`, 'check that the directory exists and is writable');
    }
    const lengthBytes = Buffer.alloc(8);
    lengthBytes.writeBigUInt64LE(BigInt(header.byteLength));
    const writer = new SafetensorsWriter(path, handle, plan, 8 + header.byteLength + dataBytes, 0);
    try {
      await writer.append(lengthBytes);
      await writer.append(header);
    } catch (err) {
      await writer.abort();
      throw err;
    }
    return writer;
  }

  /** Bytes written so far, header included. */
  get bytesWritten(): number {
    return this.position;
  }

  /**
   * Appends `chunk` to tensor `name`. Tensors must be written in the order given to create(), each
   * exactly to its length; a chunk may hold part of a tensor but never spill into the next.
   */
  async write(name: string, chunk: ArrayBufferView): Promise<void> {
    if (this.closed) throw new WeightsError(this.path, tensorField(name), 'written after close()', 'write every tensor before closing');
    let expected = this.plan[this.current];
    // A tensor whose bytes are all written (or that has none) hands over to the next one.
    while (expected !== undefined && expected.name !== name && this.written === expected.end - expected.begin) {
      this.current++;
      this.written = 0;
      expected = this.plan[this.current];
    }
    if (expected === undefined || expected.name !== name) {
      const what = expected === undefined ? 'every tensor is already complete' : `${tensorField(expected.name)} is next, with ${expected.end - expected.begin - this.written} bytes still to write`;
      throw new WeightsError(this.path, tensorField(name), `written out of order: ${what}`, 'write tensors in the order given to SafetensorsWriter.create');
    }
    const bytes = new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const left = expected.end - expected.begin - this.written;
    if (bytes.byteLength > left) {
      throw new WeightsError(this.path, tensorField(name), `got ${bytes.byteLength} bytes but only ${left} remain of its ${expected.end - expected.begin}`,
        `write exactly elements × ${DTYPE_BYTES[expected.dtype]} bytes (${expected.dtype})`);
    }
    await this.append(bytes);
    this.written += bytes.byteLength;
  }

  /** Checks that every tensor is complete, then fsyncs and closes the file. */
  async close(): Promise<void> {
    if (this.closed) return;
    const missing = this.plan.slice(this.current).find((t, i) => (i === 0 ? this.written : 0) < t.end - t.begin);
    if (missing !== undefined) {
      await this.abort();
      throw new WeightsError(this.path, tensorField(missing.name), 'was not completely written before close()', 'write every tensor to its full length');
    }
    this.closed = true;
    try {
      await this.handle.sync();
    } finally {
      await this.handle.close();
    }
  }

  /** Closes the file without checks (after an error); the partial file stays on disk. */
  async abort(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close();
  }

  private async append(bytes: Uint8Array): Promise<void> {
    let done = 0;
    while (done < bytes.byteLength) {
      const { bytesWritten } = await this.handle.write(bytes, done, bytes.byteLength - done, this.position);
      done += bytesWritten;
      this.position += bytesWritten;
    }
  }
}

function planLayout(path: string, tensors: readonly TensorSpec[]): PlannedTensor[] {
  const seen = new Set<string>();
  let offset = 0;
  return tensors.map((t) => {
    const field = tensorField(t.name);
    if (t.name.length === 0 || t.name === '__metadata__') throw new WeightsError(path, field, 'is not a usable tensor name', 'rename the tensor');
    if (seen.has(t.name)) throw new WeightsError(path, field, 'is listed twice', 'list every tensor once');
    seen.add(t.name);
    if (!isDtype(t.dtype)) throw new WeightsError(path, field, `dtype ${showValue(t.dtype)} is not supported`, `use one of ${DTYPES.join(', ')}`);
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new WeightsError(path, field, `shape ${showValue(t.shape)} is not a list of non-negative integers`, 'fix the shape');
    }
    const bytes = elementCount(t.shape) * DTYPE_BYTES[t.dtype];
    const planned = { name: t.name, dtype: t.dtype, shape: [...t.shape], begin: offset, end: offset + bytes };
    offset += bytes;
    if (!Number.isSafeInteger(offset)) throw new WeightsError(path, field, 'pushes the file past 2^53 bytes', 'split the checkpoint');
    return planned;
  });
}

/**
 * The JSON header, built by hand so that tensors keep the given order (a JS object would move
 * integer-like keys first), padded with spaces to a multiple of 8 bytes as the official writer
 * does, so that the data section starts aligned.
 */
function encodeHeader(plan: readonly PlannedTensor[], metadata: Record<string, string> | undefined): Buffer {
  const parts: string[] = [];
  if (metadata !== undefined) parts.push(`"__metadata__":${JSON.stringify(metadata)}`);
  for (const t of plan) {
    parts.push(`${JSON.stringify(t.name)}:${JSON.stringify({ dtype: t.dtype, shape: t.shape, data_offsets: [t.begin, t.end] })}`);
  }
  const json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const padded = Buffer.alloc(Math.ceil(json.byteLength / 8) * 8, 0x20);
  json.copy(padded);
  return padded;
}
