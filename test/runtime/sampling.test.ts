/**
 * Token sampling (runtime/sampling.ts): the nucleus is found without sorting the whole vocabulary,
 * and must be the one a full sort finds, token for token; the draws must follow the softmax. And the
 * native scan generate() runs on every row first (finite? greedy token?), against a plain one.
 */
import { describe, expect, it } from 'vitest';
import { loadNativeAddon } from '../../runtime/native-loader.js';
import { sampleToken, seededUniform, type Uniform } from '../../runtime/sampling.js';

/** The definition, written plainly: every token sorted by probability (ties to the lower id), the nucleus a prefix of it. */
function sampleBySortingAll(logits: Float32Array, temperature: number, topP: number, uniform: Uniform): number {
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  const probs = Array.from(logits, (l) => Math.exp((l - max) / temperature));
  const sum = probs.reduce((a, b) => a + b, 0);
  const order = probs.map((_, i) => i).sort((a, b) => probs[b]! - probs[a]! || a - b);
  let kept = 0, mass = 0;
  while (kept < order.length && (kept === 0 || mass < topP * sum)) mass += probs[order[kept++]!]!;
  let r = uniform() * mass;
  for (let i = 0; i < kept; i++) if ((r -= probs[order[i]!]!) < 0) return order[i]!;
  return order[kept - 1]!;
}

/** Logits of `n` tokens: normal, with a few large ones (a peaked row), or quantized to few values (ties). */
function randomLogits(n: number, kind: 'normal' | 'peaked' | 'ties', u: Uniform): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const g = Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
    out[i] = kind === 'ties' ? Math.round(g * 2) : kind === 'peaked' ? g * 3 + (u() < 0.001 ? 25 : 0) : g * 2;
  }
  return out;
}

describe('sampleToken', () => {
  it('with topP < 1 draws the token a full sort of the vocabulary draws, for the same uniform draws', () => {
    const u = seededUniform(11);
    let cases = 0;
    for (const n of [1, 2, 7, 300, 5000, 32768]) {
      for (const kind of ['normal', 'peaked', 'ties'] as const) {
        const logits = randomLogits(n, kind, u);
        for (const temperature of [0.05, 0.7, 1, 3]) {
          for (const topP of [1e-9, 0.1, 0.5, 0.9, 0.95, 0.999999]) {
            const seed = Math.floor(u() * 2 ** 31);
            for (let k = 0; k < 3; k++) {
              const a = seededUniform(seed + k), b = seededUniform(seed + k);
              expect(sampleToken(logits, { temperature, topP }, a), `n ${n} ${kind} T ${temperature} topP ${topP}`).toBe(sampleBySortingAll(logits, temperature, topP, b));
              cases++;
            }
          }
        }
      }
    }
    expect(cases).toBe(6 * 3 * 4 * 6 * 3);
  });

  it('keeps a nucleus whose tokens lie many orders of magnitude below the most likely one', () => {
    // Token 0 holds all but ~1e-300 of the mass; topP just under 1 needs the tail, which underflows the first floors.
    const logits = new Float32Array([0, -690, -691, -692, -1e30]);
    for (const topP of [0.5, 1 - 1e-16]) {
      for (let seed = 0; seed < 20; seed++) {
        expect(sampleToken(logits, { temperature: 1, topP }, seededUniform(seed))).toBe(sampleBySortingAll(logits, 1, topP, seededUniform(seed)));
      }
    }
  });

  it('draws each token with its softmax probability (topP 1), and only from the nucleus (topP < 1)', () => {
    const logits = new Float32Array([2, 1, 0.5, 0, -1]);
    const p = Array.from(logits, (l) => Math.exp(l));
    const z = p.reduce((a, b) => a + b, 0);
    const draws = 200_000;
    const count = (topP: number) => {
      const u = seededUniform(5), counts = new Array(logits.length).fill(0);
      for (let i = 0; i < draws; i++) counts[sampleToken(logits, { temperature: 1, topP }, u)]++;
      return counts as number[];
    };
    const all = count(1);
    all.forEach((c, i) => {
      const expected = (draws * p[i]!) / z, sigma = Math.sqrt(expected * (1 - p[i]! / z));
      expect(Math.abs(c - expected), `token ${i}: ${c} draws, expected ${expected.toFixed(0)}`).toBeLessThan(5 * sigma);
    });
    // topP 0.8: tokens 0 and 1 hold 0.770 of the mass, 0, 1 and 2 hold 0.896: the nucleus is those three.
    expect((p[0]! + p[1]!) / z).toBeLessThan(0.8);
    expect((p[0]! + p[1]! + p[2]!) / z).toBeGreaterThanOrEqual(0.8);
    const nucleus = count(0.8);
    expect(nucleus.slice(3)).toEqual([0, 0]);
    const zn = p[0]! + p[1]! + p[2]!;
    for (let i = 0; i < 3; i++) {
      const expected = (draws * p[i]!) / zn, sigma = Math.sqrt(expected * (1 - p[i]! / zn));
      expect(Math.abs(nucleus[i]! - expected), `token ${i}`).toBeLessThan(5 * sigma);
    }
  });

  it('is greedy at temperature 0', () => {
    expect(sampleToken(new Float32Array([0.1, 3, 3, -2]), { temperature: 0, topP: 0.5 }, () => 0.99)).toBe(1);
  });
});

describe('scanLogits (the runtime addon: each generated token\'s row, logits_scan.cpp)', () => {
  const { scanLogits } = loadNativeAddon();
  /** The definition, written plainly: the first non-finite value's -(index + 1), else the first index of the largest value. */
  function scanPlainly(row: Float32Array): number {
    for (let i = 0; i < row.length; i++) if (!Number.isFinite(row[i]!)) return -i - 1;
    let best = 0;
    for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
    return best;
  }

  it('gives the first largest value\'s index, or the first NaN or infinity as -(index + 1), as a plain scan does', () => {
    const u = seededUniform(5);
    let rows = 0, refused = 0;
    // Every length up to past two of its 8-wide steps (tails), and vocabulary sizes.
    for (const n of [...Array.from({ length: 40 }, (_, i) => i + 1), 32000, 32768, 131072]) {
      for (const kind of ['normal', 'peaked', 'ties'] as const) {
        for (let trial = 0; trial < (n > 1000 ? 4 : 12); trial++) {
          const row = randomLogits(n, kind, u);
          // Now and then the largest value twice (the first counts), or a NaN, +-Infinity anywhere (a tail too).
          if (trial % 3 === 1 && n > 1) row[Math.floor(u() * n)] = row[Math.floor(u() * n)] = 1e30;
          if (trial % 4 === 2) row[Math.floor(u() * n)] = [NaN, Infinity, -Infinity][trial % 3]!;
          if (trial % 5 === 4) row[n - 1] = NaN;
          const expected = scanPlainly(row);
          expect(scanLogits(row), `n ${n} ${kind} trial ${trial}`).toBe(expected);
          rows += 1, refused += expected < 0 ? 1 : 0;
        }
      }
    }
    expect(refused).toBeGreaterThan(20);
    expect(rows - refused).toBeGreaterThan(200);
  });

  it('takes -0 and +0 as equal (the first of them counts), and the largest of all-negative rows', () => {
    expect(scanLogits(Float32Array.of(-0, 0))).toBe(0);
    expect(scanLogits(Float32Array.of(-1, -0, 0, -2))).toBe(1);
    expect(scanLogits(new Float32Array(17).fill(-3e38))).toBe(0);
    const row = new Float32Array(33).fill(-5);
    row[32] = -4;
    expect(scanLogits(row)).toBe(32);
    expect(scanLogits(Float32Array.of(3.4028234663852886e38, Infinity))).toBe(-2);
  });

  it('refuses anything but a non-empty Float32Array', () => {
    expect(() => scanLogits(new Float32Array(0))).toThrow(/scanLogits: row is empty/);
    expect(() => scanLogits(new Float64Array(4) as unknown as Float32Array)).toThrow(/scanLogits: row must be a Float32Array/);
    expect(() => (scanLogits as unknown as () => number)()).toThrow(/scanLogits: row must be a Float32Array/);
  });
});
