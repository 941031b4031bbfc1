import { lstat, open, readdir, statfs } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { xoroshiro128plusFromState } from 'pure-rand/generator/xoroshiro128plus';
import type { JumpableRandomGenerator } from 'pure-rand/types/JumpableRandomGenerator';
import { checkpointTensors, elementCount, type CheckpointTensor } from '../config/checkpoint.js';
import type { ModelConfig } from '../config/model.js';
import { officialParams } from '../config/official-params.js';
import { formatBytes } from '../cli/format.js';
import { DTYPE_BYTES } from '../plan/memory.js';
import { encodeFromF32 } from './dtype.js';
import { WeightsError } from './errors.js';
import { lockOutDir, type OutLock } from './out-lock.js';
import { createTempBeside, errnoCode, fileError, makeOutDir, publish, removeIfPresent, removeOnSignal, removeQuietly, syncDirectory, writeDurably } from './output-files.js';
import { readFully, readSafetensorsHeader, SafetensorsWriter, type SafetensorsHeader } from './safetensors.js';
import { isShardName } from './shards.js';

/**
 * Seeded random checkpoints for tests and benchmarks: the official layout (params.json +
 * consolidated.safetensors), values scaled like a trained model so activations stay O(1).
 */

export interface RandomWeightsOptions {
  /** Any non-negative safe integer; the same seed gives a byte-identical file. */
  seed: number;
  dtype: 'f32' | 'bf16' | 'f16';
  /** Called after each chunk with bytes written so far and the file's total. */
  onProgress?: (written: number, total: number) => void;
}

export interface RandomWeightsResult {
  paramsPath: string;
  safetensorsPath: string;
  bytes: number;
}

/** Elements generated per chunk: 4 MiB of float32, so memory stays flat for any model size. */
const CHUNK_ELEMENTS = 1 << 20;

/**
 * The __metadata__ entry that marks a checkpoint as ours: only a file that carries it is replaced
 * by a later run, so random weights never overwrite a real model's (which cannot be regenerated).
 * Readers ignore __metadata__ beyond checking that it maps strings to strings.
 */
export const RANDOM_WEIGHTS_MARK = { written_by: 'mistral-compile random-weights' } as const;

export async function writeRandomWeights(model: ModelConfig, outDir: string, options: RandomWeightsOptions): Promise<RandomWeightsResult> {
  const { seed, dtype } = options;
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new WeightsError('--seed', undefined, `must be a non-negative integer (got ${seed})`, 'pass a seed such as 42');
  }
  if (dtype !== 'f32' && dtype !== 'bf16' && dtype !== 'f16') {
    throw new WeightsError('--dtype', undefined, `must be f32, bf16 or f16 (got ${String(dtype)})`, 'pass --dtype bf16 (as official checkpoints), f16 or f32');
  }
  await makeOutDir(outDir);
  const paramsPath = join(outDir, 'params.json');
  const safetensorsPath = join(outDir, 'consolidated.safetensors');
  // Removed on a failure or a signal (the lock too: a signal ends the run that holds it).
  const temps: string[] = [];
  const release = removeOnSignal(temps);
  let lock: OutLock | undefined;
  try {
    lock = await lockOutDir(outDir);
    temps.push(lock.path);
    await checkReplaceable(safetensorsPath, seed);
    // Both files are written in full under temporary names first: a failure until they are
    // published leaves the directory as it was (temporaries are removed).
    await checkFreeSpace(outDir, dataBytes(model, dtype));
    const weightsTemp = await createTempBeside(safetensorsPath);
    temps.push(weightsTemp);
    const bytes = await writeWeights(model, weightsTemp, safetensorsPath, options);
    const paramsTemp = await createTempBeside(paramsPath);
    temps.push(paramsTemp);
    await writeDurably(paramsTemp, `${JSON.stringify(officialParams(model), null, 2)}\n`, paramsPath);
    // Publish in the one order whose every prefix is consistent: drop the old params.json, put the
    // new weights in place, then the new params.json. Stopped anywhere, the directory holds the old
    // pair, weights without a params.json, or the new pair; never params beside other weights.
    await removeIfPresent(paramsPath);
    await syncDirectory(outDir);
    await publish(weightsTemp, safetensorsPath);
    await publish(paramsTemp, paramsPath);
    await syncDirectory(outDir);
    return { paramsPath, safetensorsPath, bytes };
  } finally {
    // Published temporaries are gone already; the lock goes last, and only if it is still ours.
    for (const temp of temps) if (temp !== lock?.path) await removeQuietly(temp);
    await lock?.release();
    release();
  }
}

/** Bytes of the checkpoint's tensors (its header adds a few KiB). */
function dataBytes(model: ModelConfig, dtype: RandomWeightsOptions['dtype']): number {
  return checkpointTensors(model).reduce((sum, t) => sum + elementCount(t.shape) * DTYPE_BYTES[dtype], 0);
}

/**
 * Refuses before writing when the file system cannot hold the new checkpoint (it is written beside
 * the old one, which goes only when the new one is complete): filling a disk hurts every other
 * process on it before ENOSPC ends the run. Where statfs is unavailable, the write's own error stands.
 */
async function checkFreeSpace(dir: string, bytes: number): Promise<void> {
  let free: number;
  try {
    const fs = await statfs(dir);
    free = fs.bavail * fs.bsize;
  } catch {
    return;
  }
  if (bytes > free) {
    throw new WeightsError(dir, undefined, `has ${formatBytes(free)} free, and the checkpoint takes ${formatBytes(bytes)}`,
      'free some space, or pass another --out on a disk with room for the checkpoint (or a smaller config)');
  }
}

/** Streams every tensor into `temp` (named `shownAs` in errors: the temporary is gone by then). */
async function writeWeights(model: ModelConfig, temp: string, shownAs: string, options: RandomWeightsOptions): Promise<number> {
  const tensors = checkpointTensors(model);
  const stDtype = ({ f32: 'F32', bf16: 'BF16', f16: 'F16' } as const)[options.dtype];
  let writer: SafetensorsWriter;
  try {
    writer = await SafetensorsWriter.create(temp, tensors.map((t) => ({ name: t.name, dtype: stDtype, shape: t.shape })),
      { metadata: { format: 'pt', ...RANDOM_WEIGHTS_MARK } });
  } catch (err) {
    throw fileError(shownAs, 'cannot be written', err);
  }
  try {
    const values = new Float32Array(CHUNK_ELEMENTS);
    for (const tensor of tensors) {
      const rng = tensorStream(options.seed, tensor.name);
      const { mean, std } = distribution(tensor);
      const count = elementCount(tensor.shape);
      for (let done = 0; done < count; done += CHUNK_ELEMENTS) {
        const chunk = values.subarray(0, Math.min(CHUNK_ELEMENTS, count - done));
        fillNormal(rng, chunk, mean, std);
        await writer.write(tensor.name, encodeFromF32(stDtype, chunk));
        options.onProgress?.(writer.bytesWritten, writer.totalBytes);
      }
    }
    await writer.close();
  } catch (err) {
    await writer.abort().catch(() => undefined); // the write's failure is the one to report
    throw fileError(shownAs, 'cannot be written', err);
  }
  return writer.totalBytes;
}

/**
 * An existing `path` is replaced only when random-weights wrote it. Anything else (a real model's
 * weights, a file we cannot read) is refused: deleting it is the user's decision, not ours.
 */
async function checkReplaceable(path: string, seed: number): Promise<void> {
  // A real model's directory without one consolidated.safetensors: its shards (a random
  // consolidated.safetensors beside them would be read instead of them), or a params.json alone.
  const dir = dirname(path);
  const names = await readdir(dir).catch(() => [] as string[]);
  const shard = names.find(isShardName);
  if (shard !== undefined) throw notOurs(join(dir, shard), 'is a shard of a checkpoint in this directory');
  try {
    await lstat(path);
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw fileError(path, 'cannot be checked before it is replaced', err);
    if (names.includes('params.json')) throw notOurs(join(dir, 'params.json'), 'exists without a consolidated.safetensors written by random-weights beside it');
    return; // nothing to replace
  }
  let header: SafetensorsHeader;
  try {
    header = await readSafetensorsHeader(path);
  } catch (err) {
    if (!(err instanceof WeightsError)) throw err;
    throw notOurs(path, 'exists and is not a safetensors file that this command can read');
  }
  if (header.metadata?.written_by === RANDOM_WEIGHTS_MARK.written_by) return;
  if (await isUnmarkedRandomWeights(path, header, seed)) return;
  throw notOurs(path, `exists and was not written by mistral-compile random-weights (its __metadata__ has no written_by ${JSON.stringify(RANDOM_WEIGHTS_MARK.written_by)})`);
}

function notOurs(path: string, problem: string): WeightsError {
  return new WeightsError(path, undefined, `${problem}, so it may be a real model's weights`,
    'pass another --out, or delete the file yourself if it is disposable (random weights from older versions of this command carry no mark '
    + 'and are recognised only when rewritten with the same --seed)');
}

/** Values compared to recognise an unmarked file: 64 draws of a seeded stream match no real checkpoint. */
const UNMARKED_PROBE_ELEMENTS = 64;

/**
 * Checkpoints written before the mark existed: recognised when the first tensor starts with
 * exactly the values `seed` draws for it, so that regenerating into the same --out with the same
 * seed (as `npm start` does on every run) keeps working after an upgrade.
 */
async function isUnmarkedRandomWeights(path: string, header: SafetensorsHeader, seed: number): Promise<boolean> {
  const meta = header.metadata;
  if (meta === null || Object.keys(meta).length !== 1 || meta.format !== 'pt') return false;
  const first = header.tensors.values().next().value; // first in data order, as checkpointTensors puts it
  if (first === undefined || first.name !== 'tok_embeddings.weight' || first.begin !== 0) return false;
  const count = Math.min(UNMARKED_PROBE_ELEMENTS, elementCount(first.shape));
  if (count === 0) return false;
  const expected = new Float32Array(count);
  const { mean, std } = distribution({ name: first.name, shape: first.shape, role: 'embedding', layer: null, expert: null });
  fillNormal(tensorStream(seed, first.name), expected, mean, std); // a prefix of a chunk: pairs are drawn in order
  const want = encodeFromF32(first.dtype, expected);
  const got = new Uint8Array(want.byteLength);
  try {
    const handle = await open(path, 'r');
    try {
      await readFully(handle, got, first.offset, path, `tensor ${first.name}`);
    } finally {
      await handle.close();
    }
  } catch {
    return false;
  }
  return Buffer.compare(got, want) === 0;
}

/** How a trained model's tensors are scaled: matrices keep x·W at unit scale; norms near 1. */
function distribution(tensor: CheckpointTensor): { mean: number; std: number } {
  if (tensor.role === 'norm') return { mean: 1, std: 0.1 }; // not all ones, so a missed weight multiply shows
  if (tensor.role === 'embedding') return { mean: 0, std: 1 };
  return { mean: 0, std: 1 / Math.sqrt(tensor.shape[1]!) }; // fan_in = shape[1] for [out, in] matrices
}

// ---- seeded streams ----

/** One generator per tensor from (seed, name): values do not depend on the order of tensors. */
export function tensorStream(seed: number, name: string): JumpableRandomGenerator {
  const words = [seed >>> 0, Math.floor(seed / 2 ** 32) >>> 0, ...new TextEncoder().encode(name)];
  const state = [0x9e3779b9, 0x243f6a88, 0xb7e15162, 0x85a308d3].map((lane) => {
    let h = lane;
    for (const w of words) h = Math.imul(h ^ w, 0x01000193) >>> 0; // FNV-1a step per word
    return mix32(h ^ words.length);
  });
  if (!state.some((s) => s !== 0)) state[0] = 1; // xoroshiro's only forbidden state
  const rng = xoroshiro128plusFromState(state);
  for (let i = 0; i < 16; i++) rng.next(); // let the state mix before the first value is used
  return rng;
}

/** murmur3's finalizer: spreads every input bit over the whole word. */
function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

const TWO_PI = 2 * Math.PI;
const INV_2_32 = 2 ** -32;

/** Fills `out` with mean + std·N(0,1) by Box-Muller (two uniforms in (0,1) per pair of normals). */
function fillNormal(rng: JumpableRandomGenerator, out: Float32Array, mean: number, std: number): void {
  for (let i = 0; i < out.length; i += 2) {
    const u1 = ((rng.next() >>> 0) + 0.5) * INV_2_32;
    const u2 = ((rng.next() >>> 0) + 0.5) * INV_2_32;
    const r = Math.sqrt(-2 * Math.log(u1)) * std;
    out[i] = mean + r * Math.cos(TWO_PI * u2);
    if (i + 1 < out.length) out[i + 1] = mean + r * Math.sin(TWO_PI * u2);
  }
}
