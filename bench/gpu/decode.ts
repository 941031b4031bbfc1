/**
 * (b) Decode tokens/s at batch 1 with random bf16 weights. Writing a 14-93 GB safetensors file
 * would take longer than the lease, so the weights are views into one 320 MB file of random bf16
 * values (|w| in [2^-6, 2^-5), random sign): every tensor gets its own random offset in it, and
 * mc_create copies each view to its own place on the GPU, so every weight byte the model reads
 * is its own device memory (identical bytes are read as often as distinct ones would be).
 */
import { randomFillSync, randomInt } from 'node:crypto';
import { existsSync, statSync, writeFileSync } from 'node:fs';
import type { KernelName, KernelNode, Plan, WeightEntry } from '../../compiler/plan/types.js';
import { DTYPE_BYTES } from '../../compiler/plan/memory.js';
import type { NativeModelInstance, NativeWeight } from '../../runtime/native.js';
import { mulberry32, randomTokens } from '../../test/reference/random.js';
import type { DecodeCase } from './cases.js';
import { median } from '../median.js';
import { openViews } from './libraries.js';

export const SYNTHETIC_BYTES = 320 * 1024 * 1024;

/** The random bf16 pool the benchmark weights are views of. */
export function writeSyntheticWeights(path: string): void {
  if (existsSync(path) && statSync(path).size === SYNTHETIC_BYTES) return;
  const buffer = Buffer.allocUnsafe(SYNTHETIC_BYTES);
  randomFillSync(buffer);
  const bits = new Uint16Array(buffer.buffer, buffer.byteOffset, SYNTHETIC_BYTES / 2);
  // Keep the sign and 7 mantissa bits; exponent 121 (2^-6): no NaN, Inf or zero, and activations stay O(1).
  for (let i = 0; i < bits.length; i++) bits[i] = (bits[i]! & 0x807f) | (121 << 7);
  writeFileSync(path, buffer);
}

/** Rows and columns of rank 0's slice of a weight (a vector is one column). */
export function sliceShape(w: WeightEntry): { rows: number; cols: number } {
  const s = w.slices[0]!;
  const rows = s.axis === 0 ? s.length : w.shape[0]!;
  const cols = w.shape.length === 1 ? 1 : s.axis === 1 ? s.length : w.shape[1]!;
  return { rows, cols };
}

/**
 * A plan's kernel nodes in launch order: compiler/plan/kernels.ts's kernelNodes, spelled out here
 * because bench/gpu also runs against a baseline checkout's compiler (prepare.sh --baseline), which
 * may predate that helper: these scripts import only what older plans already had.
 */
export function planNodes(plan: Plan): KernelNode[] {
  return [...plan.prologue, ...plan.layers.flatMap((l) => l.kernels), ...plan.epilogue];
}

/**
 * Weight bytes a call of `tokens` tokens reads at least once: every weight but the embedding table
 * (one row a token), and of each layer's experts the share that the tokens, each picking k of E
 * uniformly at random, use on average: 1 - (1 - k/E)^tokens (k/E for one token). The decode
 * limit's numerator (one token) and the prefill timing's floor.
 */
export function weightBytesRead(plan: Plan, tokens: number, skipped: ReadonlySet<KernelName> = new Set()): number {
  const elt = DTYPE_BYTES[plan.options.dtype];
  const moe = plan.model.moe;
  const expertsUsed = moe === null ? 1 : 1 - (1 - moe.num_experts_per_tok / moe.num_experts) ** tokens;
  // A weight counts once if any kernel that runs reads it; the embedding table is a row a token for
  // the lookup and the whole table for a tied output projection.
  const nodes = planNodes(plan).filter((k) => !skipped.has(k.kernel));
  const read = new Set(nodes.flatMap((k) => k.weights));
  const lookup = nodes.some((k) => k.kernel === 'embedding_lookup'), output = nodes.some((k) => k.kernel === 'rmsnorm_output');
  let bytes = 0;
  for (const w of plan.weights) {
    const { rows, cols } = sliceShape(w);
    let n = rows * cols * elt;
    if (w.name === 'tok_embeddings.weight') n = (lookup ? Math.min(rows, tokens) * cols * elt : 0) + (plan.model.tied_embeddings && output ? n : 0);
    else if (!read.has(w.name)) n = 0;
    else if (moe !== null && w.name.includes('.experts.')) n *= expertsUsed;
    bytes += n;
  }
  return bytes;
}

/**
 * Weight bytes one decoded token reads: all of them but the embedding table (one row) and the
 * unchosen experts; of the kernels that run only, where `skipped` (MC_CUDA_DIAG_SKIP) leaves some out.
 */
export function weightBytesPerToken(plan: Plan, skipped?: ReadonlySet<KernelName>): number {
  return weightBytesRead(plan, 1, skipped);
}

/**
 * KV-cache bytes the decode attention reads per token, averaged over the positions [first, first + n):
 * every layer's visible keys and values (a window's last `window` positions, else all so far).
 */
export function kvBytesPerToken(plan: Plan, first: number, n: number): number {
  let total = 0;
  for (const layer of plan.kv_cache.layers) {
    const perPosition = layer.bytes / layer.length;
    const window = plan.model.sliding_window[layer.layer] ?? null;
    for (let p = first; p < first + n; p++) total += perPosition * (window === null ? p + 1 : Math.min(p + 1, window));
  }
  return total / n;
}

export interface DecodeResult {
  label: string;
  key: string;
  layers: number;
  prompt: number;
  decode: number;
  weightBytesPerToken: number;
  /** Mean KV-cache bytes read per timed token (kvBytesPerToken). */
  kvBytesPerToken: number;
  prefillMs: number;
  /** The median of the timed repetitions (each `decode` steps, one after another). */
  msPerToken: number;
  tokensPerSecond: number;
  /** ms/token of every repetition, in order: their spread is this benchmark's noise. */
  msPerTokenRuns: number[];
}

/** Timed repetitions of the decode run; the median is reported (one run alone spread ~2%, bench/RESULTS.md run 4). */
export const DECODE_REPEATS = 5;

/**
 * Decode steps through forward() (a promise the model's own thread settles: what loadModel's
 * generate() awaits) against forwardSync (what benchDecode times), on the same model: the
 * sequence restarted (restartSequence), then repetitions of `c.decode` steps
 * alternating forwardSync, forward(), forwardSync, forward() (4 ≤ DECODE_REPEATS: the positions
 * fit the config's context). ms a token of each, the mean of its two repetitions; their difference
 * is what the promise costs a token on this machine.
 */
export const PROMISE_PAIRS = 2;
export interface PromiseDecodeResult { label: string; syncMsPerToken: number; promiseMsPerToken: number; extraUsPerToken: number }
export async function benchDecodePromise(c: DecodeCase, plan: Plan, model: NativeModelInstance): Promise<PromiseDecodeResult> {
  const tokens = randomTokens(mulberry32(11), c.prompt + WARMUP_STEPS + c.decode * 2 * PROMISE_PAIRS, plan.model.vocab_size);
  let { pos } = restartSequence(c, plan, model, tokens);
  const sync: number[] = [], promise: number[] = [];
  for (let r = 0; r < PROMISE_PAIRS; r++) {
    let started = performance.now();
    for (let i = 0; i < c.decode; i++, pos++) model.forwardSync(Int32Array.of(tokens[pos]!), pos, false);
    sync.push((performance.now() - started) / c.decode);
    started = performance.now();
    for (let i = 0; i < c.decode; i++, pos++) await model.forward(Int32Array.of(tokens[pos]!), pos, false);
    promise.push((performance.now() - started) / c.decode);
  }
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const syncMsPerToken = mean(sync), promiseMsPerToken = mean(promise);
  return { label: c.label, syncMsPerToken, promiseMsPerToken, extraUsPerToken: 1000 * (promiseMsPerToken - syncMsPerToken) };
}

/** A random 256-byte-aligned offset of the pool where `bytes` fit: each benchmark weight its own. */
const randomPoolOffset = (_index: number, bytes: number): number => randomInt(0, Math.floor((SYNTHETIC_BYTES - bytes) / 256) + 1) * 256;

/**
 * The benchmark model: every weight a view at its own offset of the synthetic pool (random, unless
 * `offsetOf(weight index, bytes)` says otherwise: a test that opens the same weights twice), copied
 * to the GPU by mc_create. Opened once per model and shared by the decode and prefill timings
 * (and profile.ts): a load copies 14-71 GB to the device.
 */
export function openSynthetic(plan: Plan, library: string, poolPath: string, offsetOf = randomPoolOffset): NativeModelInstance {
  const elt = DTYPE_BYTES[plan.options.dtype];
  const views: NativeWeight[] = plan.weights.map((w, i) => {
    const { rows, cols } = sliceShape(w);
    const bytes = rows * cols * elt;
    if (bytes > SYNTHETIC_BYTES) throw new Error(`${w.name} (${bytes} bytes) is larger than the synthetic pool`);
    return { offset: offsetOf(i, bytes), rowStride: cols, rows, cols, bytes };
  });
  return openViews(library, poolPath, views);
}

/** Decode steps before any timing: the first captures the CUDA graph. */
const WARMUP_STEPS = 8;

/**
 * Starts the model's sequence again at position 0: the first `c.prompt` of `tokens` prefilled in
 * chunks of the library's maxTokens, then WARMUP_STEPS decode steps. The prefill's ms (the warm-up
 * not counted), and the next position.
 */
function restartSequence(c: DecodeCase, plan: Plan, model: NativeModelInstance, tokens: number[]): { prefillMs: number; pos: number } {
  const started = performance.now();
  const chunk = plan.options.maxTokens;
  for (let at = 0; at < c.prompt; at += chunk) model.forwardSync(Int32Array.from(tokens.slice(at, Math.min(c.prompt, at + chunk))), at, false);
  const prefillMs = performance.now() - started;
  let pos = c.prompt;
  for (let i = 0; i < WARMUP_STEPS; i++, pos++) model.forwardSync(Int32Array.of(tokens[pos]!), pos, false);
  return { prefillMs, pos };
}

/** Decode speed of a model opened by openSynthetic (left open: the caller closes it). */
export function benchDecode(c: DecodeCase, plan: Plan, model: NativeModelInstance): DecodeResult {
  // The prompt, the warm-up steps, then the timed repetitions one after another: a token for each.
  const tokens = randomTokens(mulberry32(7), c.prompt + WARMUP_STEPS + c.decode * DECODE_REPEATS, plan.model.vocab_size);
  let { prefillMs, pos } = restartSequence(c, plan, model, tokens);
  let started: number;
  const step = () => {
    if (pos >= tokens.length) throw new Error(`decode step at position ${pos}: no token drawn for it`);
    model.forwardSync(Int32Array.of(tokens[pos]!), pos, false);
    pos += 1;
  };
  // The repetitions follow one another: a library only continues its sequence (or restarts at 0,
  // which would mean prefilling again), so each reads a few more keys than the one before, as the
  // median's KV bytes (kvBytesPerToken over every timed position) account.
  const first = pos;
  const runs: number[] = [];
  for (let r = 0; r < DECODE_REPEATS; r++) {
    started = performance.now();
    for (let i = 0; i < c.decode; i++) step();
    runs.push((performance.now() - started) / c.decode);
  }
  const msPerToken = median(runs);
  return {
    label: c.label, key: plan.key, layers: plan.model.n_layers, prompt: c.prompt, decode: c.decode,
    weightBytesPerToken: weightBytesPerToken(plan), kvBytesPerToken: kvBytesPerToken(plan, first, c.decode * DECODE_REPEATS), prefillMs, msPerToken, tokensPerSecond: 1000 / msPerToken, msPerTokenRuns: runs,
  };
}

