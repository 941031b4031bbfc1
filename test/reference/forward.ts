/**
 * The float64 reference forward pass of a Mistral transformer, written straight from the formulas
 * (shared/FACTS.md, mistral-inference's transformer.py). Independent of every kernel and of the
 * plan: this is the slow truth that generated code and llama.cpp are both checked against.
 *
 * Clarity over speed: one position at a time, plain loops, no caching beyond the K/V of the current
 * layer. Weights are row-major [out, in], named as in consolidated.safetensors.
 */
import type { ModelConfig } from '../../compiler/config/model.js';
import { checkpointTensors, elementCount } from '../../compiler/config/checkpoint.js';

export type Vector = ArrayLike<number>;
/** Returns the tensor of the given official name, row-major, as float32 or float64. */
export type WeightLookup = (name: string) => Float64Array | Float32Array;

/** y = W·x for W row-major [rows, cols]. */
export function matvec(w: Vector, x: Vector, rows: number, cols: number): Float64Array {
  if (w.length !== rows * cols) throw new Error(`matvec: weight has ${w.length} elements, expected ${rows}×${cols}`);
  if (x.length !== cols) throw new Error(`matvec: input has ${x.length} elements, expected ${cols}`);
  const y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let acc = 0;
    const base = r * cols;
    for (let c = 0; c < cols; c++) acc += w[base + c]! * x[c]!;
    y[r] = acc;
  }
  return y;
}

/** RMSNorm: x · 1/sqrt(mean(x²) + eps) · weight. */
export function rmsnorm(x: Vector, weight: Vector, eps: number): Float64Array {
  if (weight.length !== x.length) throw new Error(`rmsnorm: weight has ${weight.length} elements, input ${x.length}`);
  let sumSq = 0;
  for (let i = 0; i < x.length; i++) sumSq += x[i]! * x[i]!;
  const scale = 1 / Math.sqrt(sumSq / x.length + eps);
  const y = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) y[i] = x[i]! * scale * weight[i]!;
  return y;
}

/** Numerically stable softmax (the maximum is subtracted first). */
export function softmax(logits: Vector): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]!);
  const p = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) {
    p[i] = Math.exp(logits[i]! - max);
    sum += p[i]!;
  }
  for (let i = 0; i < p.length; i++) p[i] /= sum;
  return p;
}

/** SiLU (swish): x · sigmoid(x). */
export function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}

/**
 * Rotary position embedding on interleaved pairs: for every head and every i < head_dim/2 the pair
 * (x[2i], x[2i+1]) is rotated by the angle position · theta^(−2i/head_dim), i.e. multiplied as the
 * complex number x[2i] + i·x[2i+1] by e^{i·angle}. `x` holds one or more heads back to back.
 */
export function rope(x: Vector, position: number, headDim: number, theta: number): Float64Array {
  if (headDim % 2 !== 0 || x.length % headDim !== 0) {
    throw new Error(`rope: length ${x.length} is not a whole number of heads of even head_dim ${headDim}`);
  }
  const y = new Float64Array(x.length);
  for (let i = 0; i < headDim / 2; i++) {
    const angle = position * Math.pow(theta, (-2 * i) / headDim);
    const cos = Math.cos(angle);
    const sin = Math.sin(angle);
    for (let base = 0; base < x.length; base += headDim) {
      const a = x[base + 2 * i]!;
      const b = x[base + 2 * i + 1]!;
      y[base + 2 * i] = a * cos - b * sin;
      y[base + 2 * i + 1] = a * sin + b * cos;
    }
  }
  return y;
}

export interface AttentionShape {
  n_heads: number;
  n_kv_heads: number;
  head_dim: number;
  /** Sliding window W (a query at p sees keys at [p−W+1, p]), or null for full causal attention. */
  window: number | null;
}

/**
 * Causal grouped-query attention over one sequence.
 *
 * q: one vector [n_heads·head_dim] per query; k, v: one vector [n_kv_heads·head_dim] per key, the
 * key at index j having position j (RoPE already applied to q and k). `queryPositions` gives each
 * query's position; by default the queries are the last q.length positions (prefill of a whole
 * sequence when q.length = k.length, one decode step when q.length = 1).
 *
 * Query head h uses KV head floor(h / (n_heads / n_kv_heads)); scores are q·k / sqrt(head_dim).
 * Returns one vector [n_heads·head_dim] per query: the heads' outputs concatenated.
 */
export function attention(q: Vector[], k: Vector[], v: Vector[], shape: AttentionShape,
  queryPositions?: number[]): Float64Array[] {
  const { n_heads, n_kv_heads, head_dim, window } = shape;
  if (n_heads % n_kv_heads !== 0) throw new Error(`attention: n_kv_heads ${n_kv_heads} does not divide n_heads ${n_heads}`);
  if (k.length !== v.length) throw new Error(`attention: ${k.length} keys but ${v.length} values`);
  const group = n_heads / n_kv_heads;
  const positions = queryPositions ?? q.map((_, i) => k.length - q.length + i);
  const scale = 1 / Math.sqrt(head_dim);
  return q.map((query, qi) => {
    const p = positions[qi]!;
    if (!Number.isInteger(p) || p < 0 || p >= k.length) throw new Error(`attention: query position ${p} has no key at that position`);
    const first = window === null ? 0 : Math.max(0, p - window + 1);
    const out = new Float64Array(n_heads * head_dim);
    for (let h = 0; h < n_heads; h++) {
      const kvHead = Math.floor(h / group);
      const scores = new Float64Array(p - first + 1);
      for (let j = first; j <= p; j++) {
        let dot = 0;
        for (let d = 0; d < head_dim; d++) dot += query[h * head_dim + d]! * k[j]![kvHead * head_dim + d]!;
        scores[j - first] = dot * scale;
      }
      const probs = softmax(scores);
      for (let j = first; j <= p; j++) {
        const pj = probs[j - first]!;
        for (let d = 0; d < head_dim; d++) out[h * head_dim + d] += pj * v[j]![kvHead * head_dim + d]!;
      }
    }
    return out;
  });
}

/** The dense SwiGLU feed-forward: w2·(silu(w1·x) ⊙ w3·x). w1, w3 [hidden, dim]; w2 [dim, hidden]. */
export function feedForward(x: Vector, w1: Vector, w2: Vector, w3: Vector, dim: number, hidden: number): Float64Array {
  const a = matvec(w1, x, hidden, dim);
  const b = matvec(w3, x, hidden, dim);
  const g = new Float64Array(hidden);
  for (let i = 0; i < hidden; i++) g[i] = silu(a[i]!) * b[i]!;
  return matvec(w2, g, dim, hidden);
}

export interface MoeRoute {
  /** The chosen experts, highest gate logit first (ties: lower index first). */
  experts: number[];
  /** Softmax over the chosen experts' gate logits, in the order of `experts`. */
  weights: Float64Array;
}

/** Mistral's MoE routing: top-k of the gate logits, then softmax over those k logits only. */
export function moeRoute(gateLogits: Vector, k: number): MoeRoute {
  if (!Number.isInteger(k) || k < 1 || k > gateLogits.length) throw new Error(`moeRoute: top-k ${k} out of range 1..${gateLogits.length}`);
  const order = Array.from({ length: gateLogits.length }, (_, i) => i);
  // Array.prototype.sort is stable, so equal logits keep the lower index first.
  order.sort((a, b) => gateLogits[b]! - gateLogits[a]!);
  const experts = order.slice(0, k);
  return { experts, weights: softmax(experts.map((e) => gateLogits[e]!)) };
}

/**
 * What an error in the gate's input moves the difference of two gate logits by: g_i − g_j =
 * (w_i − w_j)·x, and an error δx in no particular direction moves it by about
 * ‖δx‖·‖w_i − w_j‖/√dim, so the unit is ‖x‖·‖w_i − w_j‖/√dim (a relative error of 1 in x).
 * gate: [experts, dim] row-major; x: [dim].
 */
export function tieScale(x: Vector, gate: Vector, i: number, j: number): number {
  const dim = x.length;
  let xx = 0, dd = 0;
  for (let c = 0; c < dim; c++) {
    xx += x[c]! * x[c]!;
    dd += (gate[i * dim + c]! - gate[j * dim + c]!) ** 2;
  }
  return Math.sqrt(xx * dd / dim);
}

/**
 * How far a routing decision is from a tie: over every chosen expert i and unchosen j, the smallest
 * (g_i − g_j) / tieScale, i.e. the relative error of the gate's input x that would typically bring
 * the two to a tie. 0 at a tie; Infinity when every expert is chosen or no pair can be separated
 * (identical gate rows, x = 0: both sides then break the tie by index alike). Top-k is
 * discontinuous at a tie: where the gap is within what 16-bit activations perturb x by, a backend
 * may choose the other expert and neither it nor this reference is wrong (bench/gpu/logits.ts draws
 * its inputs away from such ties).
 *
 * Why not the gap over the logits' RMS: with 8 experts that RMS varies ~3× from token to token
 * while the error does not follow it, so a decision whose logits happen to be small looked 2-3×
 * safer than it was (bench/gpu/routing-drift.ts measures both).
 */
export function routingGap(gateLogits: Vector, k: number, x: Vector, gate: Vector): number {
  const experts = gateLogits.length;
  if (gate.length !== experts * x.length) throw new Error(`routingGap: gate has ${gate.length} elements, expected ${experts}×${x.length}`);
  if (k >= experts) return Infinity;
  const chosen = new Set(moeRoute(gateLogits, k).experts);
  let gap = Infinity;
  for (const i of chosen) {
    for (let j = 0; j < experts; j++) {
      if (chosen.has(j)) continue;
      const scale = tieScale(x, gate, i, j);
      if (scale > 0) gap = Math.min(gap, (gateLogits[i]! - gateLogits[j]!) / scale);
    }
  }
  return gap;
}

/** What referenceLogits' observer sees of each MoE routing decision. */
export interface GateDecision {
  /** The gate logits, before top-k. */
  logits: Float64Array;
  /** The gate's input: the FFN-normed hidden state. */
  input: Float64Array;
  /** routingGap of this decision. */
  gap: number;
}

export interface ExpertWeights {
  w1: Vector;
  w2: Vector;
  w3: Vector;
}

/** Sparse MoE feed-forward: Σ over the routed experts of weight_j · FFN_j(x). gate [num_experts, dim]. */
export function moeFeedForward(x: Vector, gate: Vector, experts: ExpertWeights[], k: number, dim: number,
  hidden: number, onGate?: (decision: GateDecision) => void): Float64Array {
  const gateLogits = matvec(gate, x, experts.length, dim);
  onGate?.({ logits: gateLogits, input: Float64Array.from(x), gap: routingGap(gateLogits, k, x, gate) });
  const route = moeRoute(gateLogits, k);
  const y = new Float64Array(dim);
  route.experts.forEach((e, j) => {
    const { w1, w2, w3 } = experts[e]!;
    const out = feedForward(x, w1, w2, w3, dim, hidden);
    for (let d = 0; d < dim; d++) y[d] += route.weights[j]! * out[d]!;
  });
  return y;
}

export interface ReferenceObserver {
  /** Each MoE routing decision (its gate logits before top-k, their input, how near a tie), by layer and position. */
  gate?(layer: number, position: number, decision: GateDecision): void;
}

/**
 * Logits for every position of `tokens` (one forward pass over the whole sequence, as a prefill):
 * result[p] is row-major [vocab_size], the prediction for the token after position p.
 *
 * Every tensor of checkpointTensors(model) is looked up once and its length checked. `observer.gate`
 * sees each MoE routing decision (routingGap: how near a tie it is).
 */
export function referenceLogits(model: ModelConfig, weight: WeightLookup, tokens: number[], observer: ReferenceObserver = {}): Float64Array[] {
  const { dim, head_dim, n_heads, n_kv_heads, hidden_dim, vocab_size, norm_eps, rope_theta } = model;
  for (const t of tokens) {
    if (!Number.isInteger(t) || t < 0 || t >= vocab_size) throw new Error(`referenceLogits: token ${t} is outside the vocabulary 0..${vocab_size - 1}`);
  }
  const w = new Map<string, Float64Array | Float32Array>();
  for (const tensor of checkpointTensors(model)) {
    const data = weight(tensor.name);
    if (data.length !== elementCount(tensor.shape)) {
      throw new Error(`referenceLogits: ${tensor.name} has ${data.length} elements, expected [${tensor.shape.join(', ')}]`);
    }
    w.set(tensor.name, data);
  }
  const get = (name: string): Float64Array | Float32Array => w.get(name)!;

  const embeddings = get('tok_embeddings.weight');
  let h: Float64Array[] = tokens.map((t) => Float64Array.from(embeddings.subarray(t * dim, (t + 1) * dim)));

  for (let layer = 0; layer < model.n_layers; layer++) {
    const l = `layers.${layer}`;
    const attnNorm = get(`${l}.attention_norm.weight`);
    const wq = get(`${l}.attention.wq.weight`);
    const wk = get(`${l}.attention.wk.weight`);
    const wv = get(`${l}.attention.wv.weight`);
    const wo = get(`${l}.attention.wo.weight`);
    const xs = h.map((hp) => rmsnorm(hp, attnNorm, norm_eps));
    const q = xs.map((x, p) => rope(matvec(wq, x, n_heads * head_dim, dim), p, head_dim, rope_theta));
    const k = xs.map((x, p) => rope(matvec(wk, x, n_kv_heads * head_dim, dim), p, head_dim, rope_theta));
    const v = xs.map((x) => matvec(wv, x, n_kv_heads * head_dim, dim));
    const att = attention(q, k, v, { n_heads, n_kv_heads, head_dim, window: model.sliding_window[layer] ?? null });
    h = h.map((hp, p) => add(hp, matvec(wo, att[p]!, dim, n_heads * head_dim)));

    const ffnNorm = get(`${l}.ffn_norm.weight`);
    const f = `${l}.feed_forward`;
    h = h.map((hp, p) => {
      const x = rmsnorm(hp, ffnNorm, norm_eps);
      if (model.moe === null) {
        return add(hp, feedForward(x, get(`${f}.w1.weight`), get(`${f}.w2.weight`), get(`${f}.w3.weight`), dim, hidden_dim));
      }
      const experts = Array.from({ length: model.moe.num_experts }, (_, j) => ({
        w1: get(`${f}.experts.${j}.w1.weight`),
        w2: get(`${f}.experts.${j}.w2.weight`),
        w3: get(`${f}.experts.${j}.w3.weight`),
      }));
      return add(hp, moeFeedForward(x, get(`${f}.gate.weight`), experts, model.moe.num_experts_per_tok, dim, hidden_dim,
        observer.gate && ((d) => observer.gate!(layer, p, d))));
    });
  }

  const norm = get('norm.weight');
  const output = model.tied_embeddings ? embeddings : get('output.weight');
  return h.map((hp) => matvec(output, rmsnorm(hp, norm, norm_eps), vocab_size, dim));
}

function add(a: Float64Array, b: Float64Array): Float64Array {
  const y = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) y[i] = a[i]! + b[i]!;
  return y;
}
