/**
 * (a) CUDA logits against the CPU backend (and both against the float64 reference) on random-weight
 * tiny models: every prompt position through the prefill kernels (chunks of `chunk` tokens, so one
 * call crosses a sliding window's ring), then `decode` one-token steps through the CUDA graph.
 * Every row is judged against float64 and against the CPU backend. For MoE models the tokens are
 * drawn again from the first near-tie on (same seed, next draws) until no routing decision of the float64
 * reference is near a tie (ROUTING_MARGIN): there, top-k is discontinuous and 16-bit rounding may
 * pick either expert.
 */
import { join } from 'node:path';
import type { ModelConfig } from '../../compiler/config/model.js';
import { writeRandomWeights } from '../../compiler/weights/random.js';
import { readSafetensorsHeader, readTensorF32 } from '../../compiler/weights/safetensors.js';
import type { Plan } from '../../compiler/plan/types.js';
import { loadNativeAddon } from '../../runtime/native-loader.js';
import type { NativeModelInstance } from '../../runtime/native.js';
import { referenceLogits, type WeightLookup } from '../../test/reference/forward.js';
import { relativeL2 } from '../../test/reference/metrics.js';
import { lookup, mulberry32, randomTokens } from '../../test/reference/random.js';
import { cpuLogitsPlan, LOGITS_TOLERANCE, logitsPlan, ROUTING_MARGIN, shippedConfig, type LogitsCase } from './cases.js';
import { libraryFor, openCheckpoint, type readManifest } from './libraries.js';

export interface LogitsResult {
  name: string;
  dtype: string;
  seed: number;
  /**
   * Relative L2 of each phase's logits, its rows taken together as one tensor (the measure the kernel
   * checks use): what is judged against the tolerance. A single wrong row still shows: one row off
   * by e moves its phase by about e / sqrt(rows).
   */
  prefillVsCpu: number | null;
  decodeVsCpu: number | null;
  prefillVsReference: number;
  decodeVsReference: number;
  cpuVsReference: number | null;
  /**
   * The largest relative L2 of a single row (both phases), for reading, not judged: in bf16 a row of
   * either backend lands past 1e-2 of float64 for about 1 seed in 25 (tiny-window-list, bf16
   * rounding of the activations and the KV cache in 4 layers; the CPU backend alike), while the
   * phases stay near 5e-3.
   */
  worstRowVsReference: number;
  worstRowVsCpu: number | null;
  tolerance: number;
  /** Reference forward passes until the tokens' float64 routing was clear of ties (1 for a dense model). */
  tokenDraws: number;
  /** The smallest routingGap of the tokens checked (null for a dense model). */
  routingGap: number | null;
  /**
   * Whether the decode steps after a KV snapshot was put back (mc_kv_save, another sequence over the
   * whole cache, mc_kv_load) gave the steps taken straight after the save, bit for bit; null: not checked.
   */
  snapshotExact: boolean | null;
  pass: boolean;
}

/** Rows of logits: prompt in chunks with all logits, then one token per call. */
export function runChunked(model: NativeModelInstance, tokens: number[], prompt: number, chunk: number, vocab: number): Float32Array[] {
  const rows: Float32Array[] = [];
  for (let begin = 0; begin < prompt; begin += chunk) {
    const part = Int32Array.from(tokens.slice(begin, Math.min(prompt, begin + chunk)));
    const out = model.forwardSync(part, begin, true);
    for (let t = 0; t < part.length; t++) rows.push(out.slice(t * vocab, (t + 1) * vocab));
  }
  for (let p = prompt; p < tokens.length; p++) rows.push(model.forwardSync(Int32Array.of(tokens[p]!), p, false).slice());
  return rows;
}

const worst = (xs: number[]) => xs.reduce((a, b) => (Number.isNaN(b) ? Infinity : Math.max(a, b)), 0);

export interface LogitsOptions {
  workDir: string;
  cacheDir: string;
  archs?: string[];
  withCpu: boolean;
  prebuilt?: ReturnType<typeof readManifest>;
  /** The CUDA library of a plan, instead of nvcc's build (the emulator's: test/cuda/emu). */
  cudaLibrary?: (plan: Plan) => Promise<string>;
  /** Weights and tokens from this seed instead of a fresh one. */
  seed?: number;
  /** Also check KV snapshots (snapshotExact; default true). */
  snapshot?: boolean;
}

/**
 * The KV snapshot of `library` (runtime/model.ts keeps a generation's cache so while other calls use
 * the model): a second instance prefills the prompt and saves it, decodes (the expected rows), runs
 * another sequence over every slot (the tokens reversed, so rings wrap), puts the snapshot back and
 * decodes again. Both decodes start from the same cache, so they must agree bit for bit.
 */
async function snapshotExact(library: string, plan: Plan, safetensorsPath: string, tokens: number[], c: LogitsCase, vocab: number): Promise<boolean> {
  const group = new (loadNativeAddon().TpGroup)([await openCheckpoint(library, plan, safetensorsPath)], vocab, 0);
  try {
    const run = async (ids: number[], from: number, to: number, step: number) => {
      const rows: Float32Array[] = [];
      for (let p = from; p < to; p += step) {
        const part = Int32Array.from(ids.slice(p, Math.min(to, p + step)));
        const out = await group.forward(part, p, true);
        for (let t = 0; t < part.length; t++) rows.push(out.slice(t * vocab, (t + 1) * vocab));
      }
      return rows;
    };
    await run(tokens, 0, c.prompt, c.chunk);
    const snapshot = await group.saveKv(c.prompt);
    const expected = await run(tokens, c.prompt, tokens.length, 1);
    await run([...tokens].reverse(), 0, tokens.length, c.chunk);
    await group.loadKv(snapshot, c.prompt);
    const again = await run(tokens, c.prompt, tokens.length, 1);
    return again.every((row, i) => row.every((v, j) => Object.is(v, expected[i]![j])));
  } finally {
    group.close();
  }
}

export async function checkLogits(c: LogitsCase, options: LogitsOptions): Promise<LogitsResult> {
  const seed = options.seed ?? (Date.now() ^ (Math.random() * 0x7fffffff)) >>> 0;
  const config = shippedConfig(c.config, { as: c.name });
  const dir = join(options.workDir, c.name);
  const { safetensorsPath } = await writeRandomWeights(config, dir, { seed, dtype: c.dtype });
  const { tokens, reference, forwards, gap } = drawTokens(c, config, await readWeightsF32(safetensorsPath), mulberry32(seed));
  const vocab = config.vocab_size;

  const plan = logitsPlan(c);
  const library = options.cudaLibrary !== undefined ? await options.cudaLibrary(plan) : (await libraryFor(plan, options)).library;
  const cuda = await openCheckpoint(library, plan, safetensorsPath);
  let rows: Float32Array[];
  try {
    rows = runChunked(cuda, tokens, c.prompt, c.chunk, vocab);
  } finally {
    cuda.close();
  }
  const snapshot = options.snapshot === false ? null : await snapshotExact(library, plan, safetensorsPath, tokens, c, vocab);

  let cpuRows: Float32Array[] | null = null;
  if (options.withCpu) {
    const cpuPlan = cpuLogitsPlan(c);
    const cpu = await openCheckpoint((await libraryFor(cpuPlan, options)).library, cpuPlan, safetensorsPath);
    try {
      const out = cpu.forwardSync(Int32Array.from(tokens), 0, true);
      cpuRows = tokens.map((_, t) => out.slice(t * vocab, (t + 1) * vocab));
    } finally {
      cpu.close();
    }
  }

  const joined = (xs: ArrayLike<number>[]) => Float64Array.from(xs.flatMap((x) => Array.from(x)));
  const phase = (against: ArrayLike<number>[], from: number, to: number) => relativeL2(joined(rows.slice(from, to)), joined(against.slice(from, to)));
  const worstRow = (against: ArrayLike<number>[]) => worst(rows.map((r, i) => relativeL2(r, against[i]!)));
  const tolerance = LOGITS_TOLERANCE[c.dtype];
  const result: LogitsResult = {
    name: c.name, dtype: c.dtype, seed,
    prefillVsCpu: cpuRows === null ? null : phase(cpuRows, 0, c.prompt),
    decodeVsCpu: cpuRows === null ? null : phase(cpuRows, c.prompt, tokens.length),
    prefillVsReference: phase(reference, 0, c.prompt),
    decodeVsReference: phase(reference, c.prompt, tokens.length),
    cpuVsReference: cpuRows === null ? null : relativeL2(joined(cpuRows), joined(reference)),
    worstRowVsReference: worstRow(reference),
    worstRowVsCpu: cpuRows === null ? null : worstRow(cpuRows),
    tolerance,
    tokenDraws: forwards,
    routingGap: config.moe === null ? null : gap,
    snapshotExact: snapshot,
    pass: false,
  };
  result.pass = [result.prefillVsReference, result.decodeVsReference, result.prefillVsCpu ?? 0, result.decodeVsCpu ?? 0].every((e) => e <= tolerance)
    && snapshot !== false;
  return result;
}

/** Every tensor of a safetensors file widened to f32, for the float64 reference. */
export async function readWeightsF32(safetensorsPath: string): Promise<WeightLookup> {
  const header = await readSafetensorsHeader(safetensorsPath);
  const weights = new Map<string, Float32Array>();
  for (const [name, info] of header.tensors) weights.set(name, await readTensorF32(safetensorsPath, info));
  return lookup(weights);
}

/** Forward passes of the reference before giving up (each redraw fixes at least one position's routing; tiny-moe bf16 needs ~14 at 42 tokens, at most 26 in 20 draws: bench/gpu/routing-ties.ts). */
const MAX_FORWARDS = 200;

/**
 * Tokens from `rng` whose float64 routing keeps ROUTING_MARGIN from every tie, with their reference
 * logits. A decision at position p depends on tokens 0..p only (causal attention): where the first
 * near-tie is at p, tokens 0..p-1 are kept and p onwards drawn again. A dense model takes the first draw.
 */
export function drawTokens(c: LogitsCase, config: ModelConfig, weight: WeightLookup, rng: () => number) {
  const margin = ROUTING_MARGIN[c.dtype];
  const n = c.prompt + c.decode;
  let tokens = randomTokens(rng, n, config.vocab_size);
  for (let forwards = 1; forwards <= MAX_FORWARDS; forwards++) {
    let firstTie = n, gap = Infinity;
    const reference = referenceLogits(config, weight, tokens, {
      gate: (_layer, p, decision) => {
        gap = Math.min(gap, decision.gap);
        if (decision.gap < margin) firstTie = Math.min(firstTie, p);
      },
    });
    if (firstTie === n) return { tokens, reference, forwards, gap };
    tokens = [...tokens.slice(0, firstTie), ...randomTokens(rng, n - firstTie, config.vocab_size)];
  }
  throw new Error(`${c.name}: ${MAX_FORWARDS} draws of tokens left an MoE routing decision within ${margin} of a tie (ROUTING_MARGIN, bench/gpu/cases.ts); gate logits that tie this often need a smaller margin`);
}
