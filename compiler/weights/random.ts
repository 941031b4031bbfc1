import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { xoroshiro128plusFromState } from 'pure-rand/generator/xoroshiro128plus';
import type { JumpableRandomGenerator } from 'pure-rand/types/JumpableRandomGenerator';
import { checkpointTensors, elementCount, type CheckpointTensor } from '../config/checkpoint.js';
import type { ModelConfig } from '../config/model.js';
import { encodeFromF32 } from './dtype.js';
import { WeightsError } from './errors.js';
import { SafetensorsWriter } from './safetensors.js';

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

export async function writeRandomWeights(model: ModelConfig, outDir: string, options: RandomWeightsOptions): Promise<RandomWeightsResult> {
  const { seed, dtype } = options;
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new WeightsError('--seed', undefined, `must be a non-negative integer (got ${seed})`, 'pass a seed such as 42');
  }
  if (dtype !== 'f32' && dtype !== 'bf16' && dtype !== 'f16') {
    throw new WeightsError('--dtype', undefined, `must be f32, bf16 or f16 (got ${String(dtype)})`, 'pass --dtype bf16 (as official checkpoints), f16 or f32');
  }
  await mkdir(outDir, { recursive: true });
  const paramsPath = join(outDir, 'params.json');
  await writeFile(paramsPath, `${JSON.stringify(officialParams(model), null, 2)}\n`);

  const safetensorsPath = join(outDir, 'consolidated.safetensors');
  const tensors = checkpointTensors(model);
  const stDtype = ({ f32: 'F32', bf16: 'BF16', f16: 'F16' } as const)[dtype];
  const writer = await SafetensorsWriter.create(safetensorsPath, tensors.map((t) => ({ name: t.name, dtype: stDtype, shape: t.shape })),
    { metadata: { format: 'pt' } });
  try {
    const values = new Float32Array(CHUNK_ELEMENTS);
    for (const tensor of tensors) {
      const rng = tensorStream(seed, tensor.name);
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
    await writer.abort();
    throw err;
  }
  return { paramsPath, safetensorsPath, bytes: writer.totalBytes };
}

/** How a trained model's tensors are scaled: matrices keep x·W at unit scale; norms near 1. */
function distribution(tensor: CheckpointTensor): { mean: number; std: number } {
  if (tensor.role === 'norm') return { mean: 1, std: 0.1 }; // not all ones, so a missed weight multiply shows
  if (tensor.role === 'embedding') return { mean: 0, std: 1 };
  return { mean: 0, std: 1 / Math.sqrt(tensor.shape[1]!) }; // fan_in = shape[1] for [out, in] matrices
}

/**
 * params.json in the official spelling, so the directory looks like a real model to every reader
 * (ours and mistral-inference). Per-layer windows collapse back to an int or the shortest pattern.
 */
export function officialParams(model: ModelConfig): Record<string, unknown> {
  const params: Record<string, unknown> = {
    dim: model.dim,
    n_layers: model.n_layers,
    head_dim: model.head_dim,
    hidden_dim: model.hidden_dim,
    n_heads: model.n_heads,
    n_kv_heads: model.n_kv_heads,
    norm_eps: model.norm_eps,
    vocab_size: model.vocab_size,
    rope_theta: model.rope_theta,
    sliding_window: collapseWindows(model.sliding_window),
  };
  if (model.moe !== null) params.moe = { num_experts: model.moe.num_experts, num_experts_per_tok: model.moe.num_experts_per_tok };
  if (model.tied_embeddings) params.tied_embeddings = true;
  params.max_seq_len = model.max_seq_len;
  return params;
}

/** null (full attention everywhere), one int (same window everywhere), or the shortest repeating list. */
export function collapseWindows(perLayer: ReadonlyArray<number | null>): number | null | Array<number | null> {
  const n = perLayer.length;
  for (let period = 1; period <= n; period++) {
    if (n % period !== 0) continue;
    if (perLayer.every((w, i) => w === perLayer[i % period])) {
      return period === 1 ? (perLayer[0] ?? null) : perLayer.slice(0, period);
    }
  }
  return [...perLayer];
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
