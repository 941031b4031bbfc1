/**
 * Seeded random inputs for reference and kernel tests: the same seed gives the same numbers on
 * every machine, so a failure can be replayed.
 */
import type { ModelConfig } from '../../compiler/config/model.js';
import { checkpointTensors, elementCount } from '../../compiler/config/checkpoint.js';
import { normalizeParams } from '../../compiler/config/normalize.js';

/** mulberry32: a tiny 32-bit PRNG, uniform in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** n values uniform in [center − scale, center + scale). */
export function randomArray(rng: () => number, n: number, scale = 1, center = 0): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = center + scale * (2 * rng() - 1);
  return out;
}

/** n random token ids in [0, vocab). */
export function randomTokens(rng: () => number, n: number, vocab: number): number[] {
  return Array.from({ length: n }, () => Math.floor(rng() * vocab));
}

/**
 * Random weights for every tensor of `model`'s checkpoint, keyed by official name. Norm weights lie
 * around 1; matrices are uniform with scale 1/sqrt(fan_in), so activations stay of order one through
 * the layers; embeddings are of order one.
 */
export function randomWeights(model: ModelConfig, seed: number): Map<string, Float64Array> {
  const rng = mulberry32(seed);
  const weights = new Map<string, Float64Array>();
  for (const t of checkpointTensors(model)) {
    const n = elementCount(t.shape);
    if (t.role === 'norm') weights.set(t.name, randomArray(rng, n, 0.2, 1));
    else if (t.role === 'embedding') weights.set(t.name, randomArray(rng, n, 1));
    else weights.set(t.name, randomArray(rng, n, 1 / Math.sqrt(t.shape[t.shape.length - 1]!)));
  }
  return weights;
}

/** A lookup for referenceLogits that fails loudly on a missing name. */
export function lookup(weights: Map<string, Float64Array | Float32Array>): (name: string) => Float64Array | Float32Array {
  return (name) => {
    const w = weights.get(name);
    if (w === undefined) throw new Error(`no weight named ${name}`);
    return w;
  };
}

/** A normalized ModelConfig from inline params (max_seq_len 256 unless given). */
export function testModel(params: Record<string, unknown>, name = 'test'): ModelConfig {
  return normalizeParams({ max_seq_len: 256, ...params }, '<inline>', { name });
}
