import { describe, expect, it } from 'vitest';
import {
  attention, feedForward, matvec, moeRoute, referenceLogits, rmsnorm, rope, routingGap, softmax, tieScale, type AttentionShape,
} from './forward.js';
import { maxAbsDiff, relativeL2 } from './metrics.js';
import { lookup, mulberry32, randomArray, randomTokens, randomWeights, testModel } from './random.js';

/** A small dense GQA model: 2 query heads per KV head, head_dim 8. */
const DENSE = {
  dim: 32, n_layers: 2, head_dim: 8, hidden_dim: 48, n_heads: 4, n_kv_heads: 2,
  norm_eps: 1e-5, vocab_size: 50, rope_theta: 10000,
};

function norm2(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i]! * x[i]!;
  return Math.sqrt(s);
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

/** Random q, k, v for `n` positions, RoPE applied to q and k as the model does. */
function randomQkv(seed: number, n: number, shape: AttentionShape) {
  const rng = mulberry32(seed);
  const q = Array.from({ length: n }, (_, p) => rope(randomArray(rng, shape.n_heads * shape.head_dim), p, shape.head_dim, 1e4));
  const k = Array.from({ length: n }, (_, p) => rope(randomArray(rng, shape.n_kv_heads * shape.head_dim), p, shape.head_dim, 1e4));
  const v = Array.from({ length: n }, () => randomArray(rng, shape.n_kv_heads * shape.head_dim));
  return { q, k, v };
}

describe('rmsnorm', () => {
  it('matches a hand-computed case: x·w / sqrt(mean(x²) + eps)', () => {
    // mean(x²) = 30/4 = 7.5; with eps 0.5 the scale is 1/sqrt(8).
    const y = rmsnorm([1, 2, 3, 4], [1, 1, 2, 0.5], 0.5);
    const expected = [1, 2, 6, 2].map((v) => v / Math.sqrt(8));
    expect(maxAbsDiff(y, expected)).toBeLessThan(1e-15);
  });
});

describe('softmax', () => {
  it('matches a hand-computed case', () => {
    const p = softmax([0, Math.log(2), Math.log(3)]);
    expect(maxAbsDiff(p, [1 / 6, 2 / 6, 3 / 6])).toBeLessThan(1e-15);
  });

  it('stays finite for large logits', () => {
    expect(Array.from(softmax([1000, 1000, -1000]))).toEqual([0.5, 0.5, 0]);
  });
});

describe('rope', () => {
  it('is the identity at position 0', () => {
    const x = randomArray(mulberry32(1), 3 * 16);
    expect(Array.from(rope(x, 0, 16, 1e6))).toEqual(Array.from(x));
  });

  it('preserves the norm of every head', () => {
    const x = randomArray(mulberry32(2), 3 * 16);
    const y = rope(x, 1234, 16, 1e4);
    for (let h = 0; h < 3; h++) {
      expect(norm2(y.subarray(h * 16, (h + 1) * 16))).toBeCloseTo(norm2(x.subarray(h * 16, (h + 1) * 16)), 12);
    }
  });

  it('rotates the interleaved pair (x[2i], x[2i+1]) by pos·theta^(−2i/head_dim)', () => {
    // head_dim 4, theta 100, position 3: pair 0 turns by 3 rad, pair 1 by 3·100^(−1/2) = 0.3 rad.
    const y = rope([1, 0, 0, 2], 3, 4, 100);
    const expected = [Math.cos(3), Math.sin(3), -2 * Math.sin(0.3), 2 * Math.cos(0.3)];
    expect(maxAbsDiff(y, expected)).toBeLessThan(1e-15);
  });

  it('makes q·k depend only on the distance between positions', () => {
    const rng = mulberry32(3);
    const q = randomArray(rng, 16);
    const k = randomArray(rng, 16);
    const near = dot(rope(q, 7, 16, 1e4), rope(k, 3, 16, 1e4));
    const far = dot(rope(q, 1007, 16, 1e4), rope(k, 1003, 16, 1e4));
    expect(far).toBeCloseTo(near, 10);
  });
});

describe('attention', () => {
  const shape: AttentionShape = { n_heads: 4, n_kv_heads: 2, head_dim: 8, window: null };

  it('returns v of the current token when the window is 1', () => {
    const { q, k, v } = randomQkv(10, 6, shape);
    const out = attention(q, k, v, { ...shape, window: 1 });
    for (let p = 0; p < 6; p++) {
      for (let h = 0; h < 4; h++) {
        const kvHead = Math.floor(h / 2);
        expect(maxAbsDiff(out[p]!.subarray(h * 8, (h + 1) * 8), v[p]!.subarray(kvHead * 8, (kvHead + 1) * 8))).toBeLessThan(1e-15);
      }
    }
  });

  it('returns v of the first token at position 0', () => {
    const { q, k, v } = randomQkv(11, 3, shape);
    const out = attention(q, k, v, shape);
    expect(maxAbsDiff(out[0]!.subarray(0, 8), v[0]!.subarray(0, 8))).toBeLessThan(1e-15);
  });

  it('with window W sees exactly the keys at [p−W+1, p]', () => {
    const n = 9;
    const W = 3;
    const { q, k, v } = randomQkv(12, n, shape);
    const windowed = attention(q, k, v, { ...shape, window: W });
    for (let p = 0; p < n; p++) {
      const first = Math.max(0, p - W + 1);
      // Full attention over only the keys in the window (RoPE is already applied, so shifting indices is harmless).
      const [only] = attention([q[p]!], k.slice(first, p + 1), v.slice(first, p + 1), shape);
      expect(maxAbsDiff(windowed[p]!, only!)).toBeLessThan(1e-14);
    }
  });

  it('computes one decode step like the last row of a prefill', () => {
    const { q, k, v } = randomQkv(13, 7, shape);
    const prefill = attention(q, k, v, { ...shape, window: 4 });
    const [decode] = attention([q[6]!], k, v, { ...shape, window: 4 });
    expect(maxAbsDiff(decode!, prefill[6]!)).toBe(0);
    const [explicit] = attention([q[2]!], k, v, { ...shape, window: 4 }, [2]);
    expect(maxAbsDiff(explicit!, prefill[2]!)).toBe(0);
  });
});

describe('moeRoute', () => {
  it('takes the top-k gate logits, lower index first on ties, and softmaxes over those k only', () => {
    const route = moeRoute([1, 3, 3, 0.5], 2);
    expect(route.experts).toEqual([1, 2]);
    expect(Array.from(route.weights)).toEqual([0.5, 0.5]);
    const three = moeRoute([1, 3, 3, 0.5], 3);
    expect(three.experts).toEqual([1, 2, 0]);
    expect(maxAbsDiff(three.weights, softmax([3, 3, 1]))).toBe(0);
  });
});

describe('routingGap', () => {
  // dim 2, x = [1, 1]: gate rows [1,0], [3,0], [2,0.5], [0,0.5] give logits 1, 3, 2.5, 0.5.
  const x = [1, 1];
  const gate = [1, 0, 3, 0, 2, 0.5, 0, 0.5];
  const logits = matvec(gate, x, 4, 2);

  it('is the smallest gap between a chosen and an unchosen expert over ‖x‖·‖w_i − w_j‖/√dim: 0 at a tie, Infinity when all are chosen', () => {
    expect(Array.from(logits)).toEqual([1, 3, 2.5, 0.5]);
    expect(tieScale(x, gate, 1, 2)).toBeCloseTo(Math.sqrt(2 * 1.25 / 2), 15);
    // top-1 (expert 1): its nearest rival is expert 2, 0.5 below, ‖w1 − w2‖² = 1.25.
    expect(routingGap(logits, 1, x, gate)).toBeCloseTo(0.5 / Math.sqrt(1.25), 15);
    // top-2 (experts 1, 2): the pair (1, 3) is 2.5 apart over a scale of √9.25, closer than (2, 0), (1, 0), (2, 3).
    expect(routingGap(logits, 2, x, gate)).toBeCloseTo(2.5 / Math.sqrt(9.25), 15);
    expect(routingGap(logits, 4, x, gate)).toBe(Infinity);
    const tied = [1, 0, 3, 0, 2, 1, 0, 0.5];  // expert 2's logit is now 3 as well, by another row
    expect(routingGap(matvec(tied, x, 4, 2), 1, x, tied)).toBe(0);
  });

  it('leaves out a pair that no input separates (identical gate rows) and does not depend on the scale of x or of the gate', () => {
    const twins = [3, 0, 3, 0, 0, 1, 0, 0.5];  // experts 0 and 1 tie whatever x is, and both sides take expert 0
    expect(routingGap(matvec(twins, x, 4, 2), 1, x, twins)).toBeCloseTo(2 / Math.sqrt(9 + 1), 15);
    const big = gate.map((g) => 10 * g), far = x.map((v) => 7 * v);
    expect(routingGap(matvec(big, far, 4, 2), 2, far, big)).toBeCloseTo(routingGap(logits, 2, x, gate), 12);
  });

  it('is in units of a relative error of x: an error of relative size e in a random direction moves a pair by e tieScales (RMS)', () => {
    const dim = 128, rng = mulberry32(7);
    const normal = () => Math.sqrt(-2 * Math.log(1 - rng())) * Math.cos(2 * Math.PI * rng());
    const xs = Array.from({ length: dim }, normal), rows = Array.from({ length: 2 * dim }, normal);
    const norm = Math.hypot(...xs), e = 1e-3;
    let sum = 0;
    const draws = 4000;
    for (let n = 0; n < draws; n++) {
      const d = Array.from({ length: dim }, normal);
      const scale = e * norm / Math.hypot(...d);
      const moved = d.reduce((a, v, c) => a + scale * v * (rows[c]! - rows[dim + c]!), 0);
      sum += (moved / tieScale(xs, rows, 0, 1)) ** 2;
    }
    expect(Math.sqrt(sum / draws) / e).toBeGreaterThan(0.93);
    expect(Math.sqrt(sum / draws) / e).toBeLessThan(1.07);
  });

  it('is seen by referenceLogits for every layer and position of an MoE model, with the gate input it routes by', () => {
    const model = testModel({ ...DENSE, moe: { num_experts: 4, num_experts_per_tok: 2 } });
    const w = lookup(randomWeights(model, 30));
    const tokens = randomTokens(mulberry32(31), 6, model.vocab_size);
    const seen: string[] = [];
    const plain = referenceLogits(model, w, tokens);
    const observed = referenceLogits(model, w, tokens, {
      gate: (layer, p, d) => {
        const gateWeight = w(`layers.${layer}.feed_forward.gate.weight`);
        expect(d.logits.length).toBe(4);
        expect(Array.from(d.logits)).toEqual(Array.from(matvec(gateWeight, d.input, 4, model.dim)));
        expect(d.gap).toBe(routingGap(d.logits, 2, d.input, gateWeight));
        seen.push(`${layer}:${p}`);
      },
    });
    expect(seen.sort()).toEqual([0, 1].flatMap((l) => tokens.map((_, p) => `${l}:${p}`)).sort());
    expect(observed).toEqual(plain);
  });
});

describe('referenceLogits', () => {
  it('is causal: logits at position i do not change when later tokens change', () => {
    const model = testModel(DENSE);
    const w = lookup(randomWeights(model, 20));
    const tokens = randomTokens(mulberry32(21), 10, model.vocab_size);
    const changed = [...tokens.slice(0, 6), ...randomTokens(mulberry32(22), 4, model.vocab_size)];
    const a = referenceLogits(model, w, tokens);
    const b = referenceLogits(model, w, changed);
    for (let p = 0; p < 6; p++) expect(maxAbsDiff(a[p]!, b[p]!)).toBe(0);
    expect(maxAbsDiff(a[9]!, b[9]!)).toBeGreaterThan(1e-6);
  });

  it('gives the same logits with a window at least the sequence length as with no window', () => {
    const tokens = randomTokens(mulberry32(31), 8, DENSE.vocab_size);
    const full = testModel(DENSE);
    const w = lookup(randomWeights(full, 30));
    const expected = referenceLogits(full, w, tokens);
    for (const window of [8, 100, [null, 8]]) {
      const got = referenceLogits(testModel({ ...DENSE, sliding_window: window }), w, tokens);
      got.forEach((row, p) => expect(maxAbsDiff(row, expected[p]!)).toBe(0));
    }
    // A shorter window does change the later positions (and only those).
    const short = referenceLogits(testModel({ ...DENSE, sliding_window: 3 }), w, tokens);
    for (let p = 0; p < 3; p++) expect(maxAbsDiff(short[p]!, expected[p]!)).toBe(0);
    expect(relativeL2(short[7]!, expected[7]!)).toBeGreaterThan(1e-3);
  });

  it('with top-k = num_experts and identical experts equals the dense FFN with those weights', () => {
    const dense = testModel(DENSE);
    const moe = testModel({ ...DENSE, moe: { num_experts: 3, num_experts_per_tok: 3 } });
    const denseWeights = randomWeights(dense, 40);
    const moeWeights = randomWeights(moe, 41); // random gates; experts are overwritten below
    for (const [name, value] of denseWeights) {
      const ffn = /^layers\.(\d+)\.feed_forward\.(w[123])\.weight$/.exec(name);
      if (ffn === null) moeWeights.set(name, value);
      else for (let j = 0; j < 3; j++) moeWeights.set(`layers.${ffn[1]}.feed_forward.experts.${j}.${ffn[2]}.weight`, value);
    }
    const tokens = randomTokens(mulberry32(42), 6, DENSE.vocab_size);
    const a = referenceLogits(moe, lookup(moeWeights), tokens);
    const b = referenceLogits(dense, lookup(denseWeights), tokens);
    a.forEach((row, p) => expect(relativeL2(row, b[p]!)).toBeLessThan(1e-14));
  });

  it('routes each token to only its top-k experts', () => {
    // One expert of three is zeroed and the gate forced to avoid it; top-1 then equals that expert alone.
    const model = testModel({ ...DENSE, n_layers: 1, moe: { num_experts: 3, num_experts_per_tok: 1 } });
    const weights = randomWeights(model, 43);
    const gate = new Float64Array(3 * DENSE.dim); // all-zero gate: every logit ties, expert 0 wins
    weights.set('layers.0.feed_forward.gate.weight', gate);
    const tokens = randomTokens(mulberry32(44), 4, DENSE.vocab_size);
    const routed = referenceLogits(model, lookup(weights), tokens);
    const dense = testModel({ ...DENSE, n_layers: 1 });
    const denseWeights = new Map(weights);
    for (const w of ['w1', 'w2', 'w3']) denseWeights.set(`layers.0.feed_forward.${w}.weight`, weights.get(`layers.0.feed_forward.experts.0.${w}.weight`)!);
    const expected = referenceLogits(dense, lookup(denseWeights), tokens);
    routed.forEach((row, p) => expect(maxAbsDiff(row, expected[p]!)).toBe(0));
  });

  it('with GQA equals multi-head attention whose KV heads are duplicated', () => {
    const gqa = testModel(DENSE);
    const mha = testModel({ ...DENSE, n_kv_heads: DENSE.n_heads });
    const gqaWeights = randomWeights(gqa, 50);
    const mhaWeights = new Map(gqaWeights);
    const { head_dim, dim, n_heads } = DENSE;
    const group = DENSE.n_heads / DENSE.n_kv_heads;
    for (let layer = 0; layer < DENSE.n_layers; layer++) {
      for (const m of ['wk', 'wv']) {
        const name = `layers.${layer}.attention.${m}.weight`;
        const src = gqaWeights.get(name)!;
        const dup = new Float64Array(n_heads * head_dim * dim);
        for (let h = 0; h < n_heads; h++) {
          const kv = Math.floor(h / group); // repeat_interleave: heads 0,1 → KV head 0; 2,3 → 1
          dup.set(src.subarray(kv * head_dim * dim, (kv + 1) * head_dim * dim), h * head_dim * dim);
        }
        mhaWeights.set(name, dup);
      }
    }
    const tokens = randomTokens(mulberry32(51), 7, DENSE.vocab_size);
    const a = referenceLogits(gqa, lookup(gqaWeights), tokens);
    const b = referenceLogits(mha, lookup(mhaWeights), tokens);
    a.forEach((row, p) => expect(relativeL2(row, b[p]!)).toBeLessThan(1e-14));
  });

  it('with tied embeddings projects onto tok_embeddings', () => {
    const untied = testModel(DENSE);
    const tied = testModel({ ...DENSE, tied_embeddings: true });
    const weights = randomWeights(untied, 60);
    weights.set('output.weight', weights.get('tok_embeddings.weight')!);
    const tokens = randomTokens(mulberry32(61), 5, DENSE.vocab_size);
    const a = referenceLogits(tied, lookup(weights), tokens);
    const b = referenceLogits(untied, lookup(weights), tokens);
    a.forEach((row, p) => expect(maxAbsDiff(row, b[p]!)).toBe(0));
  });

  it('accepts float32 weights', () => {
    const model = testModel(DENSE);
    const weights = randomWeights(model, 70);
    const f32 = new Map([...weights].map(([n, w]) => [n, Float32Array.from(w)] as const));
    const rounded = new Map([...f32].map(([n, w]) => [n, Float64Array.from(w)] as const));
    const tokens = randomTokens(mulberry32(71), 5, DENSE.vocab_size);
    const a = referenceLogits(model, lookup(f32), tokens);
    const b = referenceLogits(model, lookup(rounded), tokens);
    a.forEach((row, p) => expect(maxAbsDiff(row, b[p]!)).toBe(0));
  });

  it('rejects a weight of the wrong size, naming it', () => {
    const model = testModel(DENSE);
    const weights = randomWeights(model, 80);
    weights.set('layers.1.attention.wk.weight', new Float64Array(3));
    expect(() => referenceLogits(model, lookup(weights), [1, 2])).toThrow(/layers\.1\.attention\.wk\.weight/);
  });

  it('computes the first layer as the formulas say, step by step', () => {
    // One layer, one token: attention reduces to wo·v, so the whole pass can be written out by hand.
    const model = testModel({ ...DENSE, n_layers: 1 });
    const weights = randomWeights(model, 90);
    const w = (n: string) => weights.get(n)!;
    const { dim, head_dim, n_heads, n_kv_heads, hidden_dim, vocab_size, norm_eps } = model;
    const token = 17;
    const h0 = w('tok_embeddings.weight').slice(token * dim, (token + 1) * dim);
    const x = rmsnorm(h0, w('layers.0.attention_norm.weight'), norm_eps);
    const v = matvec(w('layers.0.attention.wv.weight'), x, n_kv_heads * head_dim, dim);
    const concat = new Float64Array(n_heads * head_dim);
    for (let h = 0; h < n_heads; h++) concat.set(v.subarray(Math.floor(h / 2) * head_dim, (Math.floor(h / 2) + 1) * head_dim), h * head_dim);
    const o = matvec(w('layers.0.attention.wo.weight'), concat, dim, n_heads * head_dim);
    const h1 = h0.map((a, i) => a + o[i]!);
    const f = feedForward(rmsnorm(h1, w('layers.0.ffn_norm.weight'), norm_eps), w('layers.0.feed_forward.w1.weight'),
      w('layers.0.feed_forward.w2.weight'), w('layers.0.feed_forward.w3.weight'), dim, hidden_dim);
    const h2 = h1.map((a, i) => a + f[i]!);
    const expected = matvec(w('output.weight'), rmsnorm(h2, w('norm.weight'), norm_eps), vocab_size, dim);
    const [got] = referenceLogits(model, lookup(weights), [token]);
    expect(relativeL2(got!, expected)).toBeLessThan(1e-15);
  });

  it('gives finite logits for every position of a dim-128, 4-layer, 64-token model', () => {
    const model = testModel({ ...DENSE, dim: 128, n_layers: 4, n_heads: 8, n_kv_heads: 2, head_dim: 16, hidden_dim: 384, vocab_size: 1000 });
    const w = lookup(randomWeights(model, 100));
    const tokens = randomTokens(mulberry32(101), 64, model.vocab_size);
    const logits = referenceLogits(model, w, tokens);
    expect(logits.length).toBe(64);
    expect(logits.every((row) => row.length === model.vocab_size && row.every(Number.isFinite))).toBe(true);
  });
});

describe('relativeL2', () => {
  it('is Infinity when the actual values hold NaN or Inf', () => {
    expect(relativeL2([1, NaN], [1, 2])).toBe(Infinity);
    expect(relativeL2([1, Infinity], [1, 2])).toBe(Infinity);
    expect(relativeL2([3, 4], [3, 4])).toBe(0);
    expect(relativeL2([3, 5], [3, 4])).toBeCloseTo(1 / 5, 15);
  });
});
