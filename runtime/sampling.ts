import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';

/**
 * Token sampling from one row of logits: greedy at temperature 0, else softmax(logits / T)
 * restricted to the smallest set of tokens whose probability reaches topP (nucleus sampling).
 */
export interface SamplingOptions {
  temperature: number;
  topP: number;
}

export type Uniform = () => number;

/** A seeded uniform [0, 1) source (pure-rand's xoroshiro128+, 53-bit doubles). */
export function seededUniform(seed: number): Uniform {
  const rng = xoroshiro128plus(seed | 0);
  return () => {
    const hi = rng.next() >>> 5;
    const lo = rng.next() >>> 6;
    return (hi * 67108864 + lo) / 9007199254740992;
  };
}

/** Index of the first NaN or infinite logit, or -1: no token can be chosen from such a row. */
export function firstNonFinite(logits: Float32Array): number {
  for (let i = 0; i < logits.length; i++) if (!Number.isFinite(logits[i]!)) return i;
  return -1;
}

export function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return best;
}

export function sampleToken(logits: Float32Array, options: SamplingOptions, uniform: Uniform): number {
  if (options.temperature === 0) return argmax(logits);
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  const probs = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += probs[i] = Math.exp((logits[i]! - max) / options.temperature);
  const order = Array.from(probs.keys()).sort((a, b) => probs[b]! - probs[a]! || a - b);
  let kept = 0;
  let mass = 0;
  while (kept < order.length && (kept === 0 || mass < options.topP * sum)) mass += probs[order[kept++]!]!;
  let r = uniform() * mass;
  for (let i = 0; i < kept; i++) {
    r -= probs[order[i]!]!;
    if (r < 0) return order[i]!;
  }
  return order[kept - 1]!;
}
