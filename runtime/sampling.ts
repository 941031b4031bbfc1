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

export function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return best;
}

/**
 * Greedy at temperature 0; else a token drawn from softmax(logits / temperature), restricted to the
 * nucleus: the most likely tokens (ties to the lower id), in that order, until their mass reaches
 * topP. With topP < 1 only the tokens that can be in the nucleus are sorted: those within a factor
 * of the most likely one, the factor widened until their mass suffices (a full sort of a 32k-131k
 * vocabulary took milliseconds a token, as long as a GPU's decode step). The nucleus, its order and
 * the token drawn are those of sorting every token. With topP = 1 every token is kept, in id order.
 */
export function sampleToken(logits: Float32Array, options: SamplingOptions, uniform: Uniform): number {
  if (options.temperature === 0) return argmax(logits);
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  const probs = new Float64Array(logits.length);  // relative to the most likely token's (1)
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += probs[i] = Math.exp((logits[i]! - max) / options.temperature);
  if (options.topP >= 1) return draw(probs, null, probs.length, sum, uniform);
  const target = options.topP * sum;
  for (let floor = 2 ** -10; ; floor *= floor) {  // 2^-10, 2^-20, 2^-40, ... then 0 (underflow): at most 8 passes
    // The tokens at or above the floor are a prefix of the full order, so the nucleus is a prefix
    // of theirs whenever they reach the target (or are every token).
    const order: number[] = [];
    for (let i = 0; i < probs.length; i++) if (probs[i]! >= floor) order.push(i);
    order.sort((a, b) => probs[b]! - probs[a]! || a - b);
    let kept = 0;
    let mass = 0;
    while (kept < order.length && (kept === 0 || mass < target)) mass += probs[order[kept++]!]!;
    if (mass >= target || order.length === probs.length) return draw(probs, order, kept, mass, uniform);
  }
}

/** Token `order[i]` (or i when order is null) for the first i < kept where the running sum passes uniform() × mass. */
function draw(probs: Float64Array, order: readonly number[] | null, kept: number, mass: number, uniform: Uniform): number {
  let r = uniform() * mass;
  for (let i = 0; i < kept; i++) {
    const token = order === null ? i : order[i]!;
    r -= probs[token]!;
    if (r < 0) return token;
  }
  return order === null ? kept - 1 : order[kept - 1]!;
}
