/**
 * (a) CUDA logits against the CPU backend (and both against the float64 reference) on random-weight
 * tiny models: every prompt position through the prefill kernels (chunks of `chunk` tokens, so one
 * call crosses a sliding window's ring), then `decode` one-token steps through the CUDA graph.
 */
import { join } from 'node:path';
import { writeRandomWeights } from '../../compiler/weights/random.js';
import { readSafetensorsHeader, readTensorF32 } from '../../compiler/weights/safetensors.js';
import type { Plan } from '../../compiler/plan/types.js';
import type { NativeModelInstance } from '../../runtime/native.js';
import { referenceLogits } from '../../test/reference/forward.js';
import { relativeL2 } from '../../test/reference/metrics.js';
import { lookup, mulberry32, randomTokens } from '../../test/reference/random.js';
import { cpuLogitsPlan, LOGITS_TOLERANCE, logitsPlan, shippedConfig, type LogitsCase } from './cases.js';
import { libraryFor, openCheckpoint, type readManifest } from './libraries.js';

export interface LogitsResult {
  name: string;
  dtype: string;
  seed: number;
  /** Largest relative L2 over the rows of each phase. */
  prefillVsCpu: number | null;
  decodeVsCpu: number | null;
  prefillVsReference: number;
  decodeVsReference: number;
  cpuVsReference: number | null;
  tolerance: number;
  /** Rows where the CPU backend is itself beyond tolerance of float64 (a routing flip), not judged against it. */
  cpuRowsSkipped: number;
  pass: boolean;
}

/** Rows of logits: prompt in chunks with all logits, then one token per call. */
function runChunked(model: NativeModelInstance, tokens: number[], prompt: number, chunk: number, vocab: number): Float32Array[] {
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
}

export async function checkLogits(c: LogitsCase, options: LogitsOptions): Promise<LogitsResult> {
  const seed = options.seed ?? (Date.now() ^ (Math.random() * 0x7fffffff)) >>> 0;
  const config = shippedConfig(c.config, { as: c.name });
  const dir = join(options.workDir, c.name);
  const { safetensorsPath } = await writeRandomWeights(config, dir, { seed, dtype: c.dtype });
  const tokens = randomTokens(mulberry32(seed), c.prompt + c.decode, config.vocab_size);
  const vocab = config.vocab_size;

  const plan = logitsPlan(c);
  const cuda = await openCheckpoint(options.cudaLibrary !== undefined ? await options.cudaLibrary(plan) : (await libraryFor(plan, options)).library, plan, safetensorsPath);
  let rows: Float32Array[];
  try {
    rows = runChunked(cuda, tokens, c.prompt, c.chunk, vocab);
  } finally {
    cuda.close();
  }

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

  const header = await readSafetensorsHeader(safetensorsPath);
  const weights = new Map<string, Float32Array>();
  for (const [name, info] of header.tensors) weights.set(name, await readTensorF32(safetensorsPath, info));
  const reference = referenceLogits(config, lookup(weights), tokens);

  const phase = (against: ArrayLike<number>[], from: number, to: number) => worst(rows.slice(from, to).map((r, i) => relativeL2(r, against[from + i]!)));
  const tolerance = LOGITS_TOLERANCE[c.dtype];
  const result: LogitsResult = {
    name: c.name, dtype: c.dtype, seed,
    prefillVsCpu: cpuRows === null ? null : phase(cpuRows, 0, c.prompt),
    decodeVsCpu: cpuRows === null ? null : phase(cpuRows, c.prompt, tokens.length),
    prefillVsReference: phase(reference, 0, c.prompt),
    decodeVsReference: phase(reference, c.prompt, tokens.length),
    cpuVsReference: cpuRows === null ? null : worst(cpuRows.map((r, i) => relativeL2(r, reference[i]!))),
    tolerance,
    cpuRowsSkipped: 0,
    pass: false,
  };
  // Always against float64; against the CPU backend row by row wherever the CPU backend itself is
  // within tolerance of float64 (a bf16 near-tie of two gate logits can route a token differently
  // in the CPU backend: top-k is discontinuous, and neither backend is then wrong).
  const cpuTrusted = (p: number) => cpuRows !== null && relativeL2(cpuRows[p]!, reference[p]!) <= tolerance;
  const vsCpu = cpuRows === null ? [] : rows.map((r, p) => (cpuTrusted(p) ? relativeL2(r, cpuRows![p]!) : 0));
  result.cpuRowsSkipped = cpuRows === null ? 0 : rows.filter((_, p) => !cpuTrusted(p)).length;
  result.pass = [result.prefillVsReference, result.decodeVsReference, ...vsCpu].every((e) => e <= tolerance);
  return result;
}
