/**
 * What the GPU check runs, as plain data shared by check.ts (on the GPU machine) and prebuild.ts
 * (which compiles the same libraries ahead of time, so that a lease is not spent in nvcc).
 */
import { join } from 'node:path';
import { checkpointTensors, elementCount } from '../../compiler/config/checkpoint.js';
import { loadModelConfig } from '../../compiler/config/load.js';
import type { ModelConfig } from '../../compiler/config/model.js';
import { packageRoot } from '../../compiler/paths.js';
import { buildPlan } from '../../compiler/plan/build-plan.js';
import type { Dtype, Plan } from '../../compiler/plan/types.js';
import { DECODE_REPEATS } from './decode.js';

export function shippedConfig(name: string, options: { as?: string; maxSeqLen?: number; layers?: number } = {}): ModelConfig {
  const config = loadModelConfig(join(packageRoot(), 'configs', 'models', name), { name: options.as ?? name, maxSeqLen: options.maxSeqLen });
  if (options.layers === undefined || options.layers === config.n_layers) return config;
  return { ...config, n_layers: options.layers, sliding_window: config.sliding_window.slice(0, options.layers) };
}

// ---- (a) logits of the CUDA library against the CPU backend and the float64 reference ----
export interface LogitsCase {
  /** Model directory name, hence the model name in the specialization key. */
  name: string;
  config: string;
  dtype: Dtype;
  /** Prompt tokens, prefilled in chunks of `chunk` (T > 1: the prefill kernels), then `decode` steps (T = 1: the graph). */
  prompt: number;
  chunk: number;
  decode: number;
}

// Every tiny config in every dtype: each case is a few seconds of nvcc and milliseconds on the GPU.
export const LOGITS_CASES: LogitsCase[] = ['tiny-dense', 'tiny-dense-full', 'tiny-window-list', 'tiny-moe', 'tiny-moe-top1'].flatMap((config) =>
  (['bf16', 'f16', 'f32'] as const).map((dtype) => ({ name: `gpu-${config}-${dtype}`, config, dtype, prompt: 32, chunk: 12, decode: 10 })));

/**
 * Relative L2 per logits row that the CUDA library must meet against the CPU backend (issue 4).
 * f16 keeps 3 more mantissa bits than bf16 but its KV cache and GEMM inputs are still rounded to
 * 16 bits: the bf16 bound holds for it too.
 */
export const LOGITS_TOLERANCE: Record<Dtype, number> = { bf16: 1e-2, f16: 1e-2, f32: 1e-4 };

/**
 * How far from a tie every MoE routing decision of the float64 reference must be (routingGap in
 * test/reference/forward.ts: the relative error of the gate's input that would typically bring a
 * chosen and an unchosen expert to a tie) for a draw of tokens to be checked. Top-k is
 * discontinuous: where rounding the activations to 16 bits moves a decision past its tie, the CUDA
 * library routes the token to the other expert, and its row is ~0.27 off float64 though nothing is
 * wrong (the GPU check of 2026-11-26 failed 27 of 170 tiny-moe runs in bf16 so, each reproduced by
 * the emulator at the same seed; first draws of 42 tokens still flip 32 times in 150 seeds).
 *
 * What rounding moves a decision by in the CUDA library (bench/gpu/routing-drift.ts: the emulated
 * library's own gate logits, 150 seeds of each, 2026-11-28): in bf16, median 2.8e-3 (top-2) and
 * 2.1e-3 (top-1), 1 in 1000 beyond 1.0e-2, the largest 1.3e-2 of ~12,000 decisions a case: 0.04
 * keeps 3 times that. f16 keeps 3 more mantissa bits: medians 3.5e-4 and 2.7e-4, the largest 1.3e-3
 * and 1.7e-3 of 3360 (40 seeds each), so 0.005. In f32 the largest was 7.6e-7 (tiny-moe, 40 seeds),
 * far under 1e-3.
 * Of random draws' decisions 12% (top-2) and 5% (top-1) lie under 0.04; redrawing from the first
 * near-tie on (bench/gpu/logits.ts drawTokens) then takes ~14 and ~5 reference passes for 42 tokens
 * (bench/gpu/routing-ties.ts). Raw output: bench/gpu/runs/2026-11-28-routing.
 *
 * Until 2026-11-28 the gap was measured over the RMS of the gate logits, with a margin of 0.02. With
 * 8 experts that RMS varies ~3 times from token to token and the error does not follow it: the same
 * drift reached 7.3e-2 and 8.2e-2 in those units, and a CI run failed on a decision 0.024 from a tie
 * (tiny-moe bf16, seed 2075579715; routingGap 0.010).
 */
export const ROUTING_MARGIN: Record<Dtype, number> = { bf16: 0.04, f16: 0.005, f32: 1e-3 };

export function logitsPlan(c: LogitsCase): Plan {
  return buildPlan(shippedConfig(c.config, { as: c.name }), { target: 'cuda', dtype: c.dtype, tp: 1, maxTokens: c.chunk });
}
/** The CPU backend's plan of the same model: the whole sequence in one call. */
export function cpuLogitsPlan(c: LogitsCase): Plan {
  return buildPlan(shippedConfig(c.config, { as: c.name }), { target: 'cpu', dtype: c.dtype, tp: 1, maxTokens: Math.max(64, c.prompt + c.decode) });
}

// ---- (b) kernels on their own: test/gpu/kernels.cu built against these configs' sources ----
export interface KernelCase { config: string; dtype: Dtype }
export const KERNEL_CASES: KernelCase[] = [
  { config: 'tiny-dense', dtype: 'bf16' }, { config: 'tiny-dense', dtype: 'f16' }, { config: 'tiny-dense', dtype: 'f32' },
  { config: 'tiny-moe', dtype: 'bf16' }, { config: 'tiny-moe', dtype: 'f16' }, { config: 'tiny-moe', dtype: 'f32' },
  { config: 'mistral-7b-v0.1', dtype: 'bf16' }, { config: 'mixtral-8x7b', dtype: 'bf16' },
  // Real shapes whose query heads per KV head differ from 4 (the flash prefill tile holds 64 / GROUP
  // tokens): 6 for Codestral 22B (and Mixtral 8x22B), 12 for Mistral Large 2.
  { config: 'codestral-22b', dtype: 'bf16' }, { config: 'mistral-large-2', dtype: 'bf16' },
];
export function kernelPlan(c: KernelCase): Plan {
  return buildPlan(shippedConfig(c.config, { maxSeqLen: 1024 }), { target: 'cuda', dtype: c.dtype, tp: 1, maxTokens: 64 });
}

// ---- (c) decode speed at batch 1, and prefill speed on the same models ----
export interface DecodeCase {
  label: string;
  config: string;
  /** Fewer layers than the model has, when all of them do not fit the GPU (Mixtral 8x7B in 80 GB). */
  layers?: number;
  prompt: number;
  decode: number;
}

/** GPU memory the benchmark leaves beside the bf16 weights: KV cache, activations, the CUDA context, and the PyTorch peer's own overheads (it loads the same weights after ours are freed). */
export const DECODE_RESERVE_GIB = 8;
/** Total memory (MiB, as nvidia-smi reports it) of the GPUs the device tool lends: H100 80GB HBM3, H200. */
export const LENT_GPU_MIB = [81559, 143771] as const;

/** As many of the config's layers as fit `gpuMiB` of memory in bf16 beside DECODE_RESERVE_GIB (the issue: "Mixtral with as many layers as fit"). */
export function layersThatFit(config: string, gpuMiB: number): number {
  const model = shippedConfig(config);
  const bytes = (layer: number | null) => 2 * checkpointTensors(model).filter((t) => t.layer === layer).reduce((sum, t) => sum + elementCount(t.shape), 0);
  const budget = (gpuMiB / 1024 - DECODE_RESERVE_GIB) * 2 ** 30 - bytes(null);
  return Math.max(1, Math.min(model.n_layers, Math.floor(budget / bytes(0))));
}

/** The benchmark models on a GPU of `gpuMiB`: Mistral-7B whole, Mixtral-8x7B with as many layers as fit (26 of 32 on an 80 GB H100). */
export function decodeCases(gpuMiB: number = LENT_GPU_MIB[0]): DecodeCase[] {
  const mixtral = layersThatFit('mixtral-8x7b', gpuMiB), all = shippedConfig('mixtral-8x7b').n_layers;
  return [
    { label: 'Mistral-7B (v0.1 shapes)', config: 'mistral-7b-v0.1', prompt: 128, decode: 128 },
    mixtral === all
      ? { label: 'Mixtral-8x7B', config: 'mixtral-8x7b', prompt: 128, decode: 128 }
      : { label: `Mixtral-8x7B, ${mixtral} of ${all} layers`, config: 'mixtral-8x7b', layers: mixtral, prompt: 128, decode: 128 },
  ];
}
/** The cases on an 80 GB H100, the GPU of every measurement so far. */
export const DECODE_CASES: DecodeCase[] = decodeCases();

/** Context (positions before the timed steps) of the long-context decode cases, per config. */
export const LONG_CONTEXT: Readonly<Record<string, number>> = { 'mistral-7b-v0.1': 4096, 'mixtral-8x7b': 16384 };
/**
 * Decode at a long context (check.ts's `long` section): the same models with LONG_CONTEXT
 * positions prefilled first. Mistral-7B's 4096-token window is then full (each step reads 4096 keys
 * and values a layer, ~0.54 GB a token, ~4% of its bytes); Mixtral has no window (16384 positions:
 * ~1.7 GB a token with 26 layers, ~8%). Where the decode attention (split along the keys) must
 * stream the KV cache at the weights' pace (issue 4: "a long window still fills the GPU").
 */
export function longDecodeCases(gpuMiB: number = LENT_GPU_MIB[0]): DecodeCase[] {
  return decodeCases(gpuMiB).map((c) => {
    const context = LONG_CONTEXT[c.config]!;
    return { ...c, label: `${c.label}, at ${context} positions`, prompt: context, decode: 64 };
  });
}

/**
 * The model of a decode case: a context of 1024, or of its prompt, 8 warm-up steps and the timed
 * repetitions (decode.ts) where that is longer.
 */
export function decodeConfig(c: DecodeCase): ModelConfig {
  const name = `bench-${c.config}${c.layers === undefined ? '' : `-${c.layers}l`}`;
  const maxSeqLen = Math.max(1024, c.prompt + 8 + c.decode * DECODE_REPEATS);
  return shippedConfig(c.config, { as: maxSeqLen === 1024 ? name : `${name}-${maxSeqLen}`, maxSeqLen, layers: c.layers });
}
/**
 * Prompt lengths of the prefill timing (one call at position 0 each), on the decode cases' models:
 * 16 (bound by reading the weights: split-K's case), 128, 512 (toward the matrix rate).
 */
export const PREFILL_TOKENS = [16, 128, 512] as const;

/** maxTokens covers the longest prefill timed, so each is one call; a longer decode prompt is prefilled in chunks of it. */
export function decodePlan(c: DecodeCase): Plan {
  return buildPlan(decodeConfig(c), { target: 'cuda', dtype: 'bf16', tp: 1, maxTokens: Math.max(...PREFILL_TOKENS) });
}

/** The decode cases (for a GPU of `gpuMiB`) whose config is named in `names` (comma-separated), all of them without a list. */
export function selectDecodeCases(names: string | undefined, gpuMiB?: number, which: 'short' | 'long' = 'short'): DecodeCase[] {
  const cases = which === 'long' ? longDecodeCases(gpuMiB) : decodeCases(gpuMiB);
  if (names === undefined || names === '') return cases;
  const wanted = names.split(',').map((n) => n.trim());
  const unknown = wanted.filter((n) => !cases.some((c) => c.config === n));
  if (unknown.length > 0) throw new Error(`--cases: no decode case for ${unknown.join(', ')}; pass some of ${cases.map((c) => c.config).join(', ')}`);
  return cases.filter((c) => wanted.includes(c.config));
}
