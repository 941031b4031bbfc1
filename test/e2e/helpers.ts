/**
 * Shared pieces of the end-to-end tests: a temporary workspace (model directories and a build
 * cache of its own), random-weight model directories from inline params or a shipped tiny config,
 * the float64 reference on the very weights the compiled model reads, and per-position comparison.
 * The runtime addon is built once for the whole run by test/global-setup.ts.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import { loadModelConfig } from '../../compiler/config/load.js';
import type { ModelConfig } from '../../compiler/config/model.js';
import { normalizeParams } from '../../compiler/config/normalize.js';
import { packageRoot } from '../../compiler/paths.js';
import { writeRandomWeights } from '../../compiler/weights/random.js';
import { readSafetensorsHeader, readTensorF32 } from '../../compiler/weights/safetensors.js';
import { referenceLogits } from '../reference/forward.js';
import { relativeL2 } from '../reference/metrics.js';
import { lookup, mulberry32, randomTokens } from '../reference/random.js';

export type WeightDtype = 'f32' | 'bf16' | 'f16';

/**
 * Largest relative L2 error per logits row against the float64 reference. f32: only summation
 * order differs (~4e-7 observed). bf16: keys and values are cached in bf16 (~2e-3 observed).
 */
export const TOLERANCE: Readonly<Record<WeightDtype, number>> = { f32: 1e-5, bf16: 1e-2, f16: 1e-2 };

/** A small dense GQA model (4 query heads, 2 KV heads): the base that each test varies. */
export const DENSE_GQA: Readonly<Record<string, unknown>> = {
  dim: 64, n_layers: 2, head_dim: 16, hidden_dim: 128, n_heads: 4, n_kv_heads: 2,
  norm_eps: 1e-5, vocab_size: 512, rope_theta: 1e6,
};

// ---- workspace ----

export interface Workspace {
  /** Model directories go here. */
  root: string;
  /** The build cache of this test file alone (never the user's ~/.cache). */
  cacheDir: string;
  remove(): Promise<void>;
}

export async function createWorkspace(prefix: string): Promise<Workspace> {
  const root = await mkdtemp(join(tmpdir(), `mc-e2e-${prefix}-`));
  const cacheDir = join(root, 'cache');
  await mkdir(cacheDir);
  return { root, cacheDir, remove: () => rm(root, { recursive: true, force: true }) };
}

// ---- model directories ----

/** Inline params.json contents, or the name of a config under configs/models/. */
export type ModelSource = { params: Record<string, unknown> } | { shipped: string };

export interface ModelDir {
  dir: string;
  /** The config as loadModel reads it back from dir/params.json. */
  config: ModelConfig;
  safetensorsPath: string;
  dtype: WeightDtype;
}

/** Writes params.json and seeded random consolidated.safetensors to root/name. */
export async function writeModelDir(root: string, name: string, source: ModelSource,
  options: { seed: number; dtype: WeightDtype }): Promise<ModelDir> {
  const dir = join(root, name);
  const config = 'params' in source
    ? normalizeParams({ max_seq_len: 256, ...source.params }, join(dir, 'params.json'), { name })
    : loadModelConfig(join(packageRoot(), 'configs', 'models', source.shipped), { name });
  const { safetensorsPath } = await writeRandomWeights(config, dir, options);
  return { dir, config: loadModelConfig(dir), safetensorsPath, dtype: options.dtype };
}

/** Every tensor of a checkpoint, decoded to float32 (bf16 widens exactly). */
export async function readCheckpointF32(path: string): Promise<Map<string, Float32Array>> {
  const header = await readSafetensorsHeader(path);
  const weights = new Map<string, Float32Array>();
  for (const [name, info] of header.tensors) weights.set(name, await readTensorF32(path, info));
  return weights;
}

/** The float64 reference logits of `tokens` on the weights stored in the model directory. */
export async function referenceFor(model: ModelDir, tokens: number[]): Promise<Float64Array[]> {
  return referenceLogits(model.config, lookup(await readCheckpointF32(model.safetensorsPath)), tokens);
}

/** n seeded random token ids of the model's vocabulary. */
export function tokensFor(model: ModelDir, n: number, seed: number): number[] {
  return randomTokens(mulberry32(seed), n, model.config.vocab_size);
}

// ---- comparison ----

/** Relative L2 error of every row; a NaN or infinite logit makes its row Infinity. */
export function positionErrors(actual: readonly ArrayLike<number>[], expected: readonly ArrayLike<number>[]): number[] {
  return expected.map((row, p) => (actual[p] === undefined ? Infinity : relativeL2(actual[p]!, row)));
}

/**
 * Expects as many rows as the reference and every row within `tolerance` (NaN never passes);
 * returns the largest error, for annotating the test.
 */
export function expectRowsWithin(actual: readonly ArrayLike<number>[], expected: readonly ArrayLike<number>[],
  tolerance: number, what = 'position'): number {
  expect(actual.length, 'number of logits rows').toBe(expected.length);
  const errors = positionErrors(actual, expected);
  errors.forEach((error, p) => {
    expect(error <= tolerance, `${what} ${p}: relative L2 ${error} > ${tolerance}`).toBe(true);
  });
  return Math.max(0, ...errors);
}

export function formatError(error: number): string {
  return error.toExponential(2);
}

/** Index of the largest value (the first one on ties). */
export function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

export async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

/**
 * The message of the error that `run` throws or rejects with; fails the test when it does not
 * fail. Errors of this project are one line, so the message must hold no newline.
 */
export async function errorMessage(run: () => unknown): Promise<string> {
  let caught: unknown;
  try {
    await run();
  } catch (err) {
    caught = err;
  }
  expect(caught, 'an error').toBeInstanceOf(Error);
  const message = (caught as Error).message;
  expect(message, 'a one-line message').not.toMatch(/\n/);
  return message;
}
