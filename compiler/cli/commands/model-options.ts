import { readdirSync, statSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { checkSequenceFits, type LoadOptions } from '../../../runtime/model.js';
import { loadModelConfig } from '../../config/load.js';
import { isShardName } from '../../weights/shards.js';
import { TARGETS, TP_SIZES, type TpSize } from '../../plan/types.js';
import { parseArchs } from '../../build/nvcc.js';
import { choiceArg, intArg, UsageError } from '../args.js';

/** Options shared by the commands that load a model (logits, generate). */
export const MODEL_OPTIONS = {
  model: { type: 'string' }, tokens: { type: 'string' }, target: { type: 'string' }, tp: { type: 'string' }, arch: { type: 'string' },
  'max-seq-len': { type: 'string' }, weights: { type: 'string' }, 'max-tokens-per-call': { type: 'string' }, threads: { type: 'string' }, cache: { type: 'string' }, json: { type: 'boolean' },
} as const;

export const MODEL_OPTIONS_HELP = `  --model DIR       model directory: params.json + consolidated.safetensors, or its params.json (required)
  --tokens 1,2,3    prompt token ids (required); @FILE reads them from FILE (@- from standard input),
                    separated by commas or white space, for prompts longer than an argument may be
  --target T        cpu (default) or cuda
  --arch A,B        GPU architectures of a cuda build (default sm_90a,sm_80)
  --tp N            tensor-parallel ranks (default 1), in this process; with WORLD_SIZE set in
                    the environment (torchrun style: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT,
                    LOCAL_RANK, LOCAL_WORLD_SIZE; MC_DIST_TIMEOUT_S), one rank per process instead, and rank 0 prints the results
  --max-seq-len N   context to allocate (default: params.json's, else 32768)
  --max-tokens-per-call N
                    prefill chunk, most tokens per forward call; sizes the activation
                    buffers (default 512)
  --threads N       CPU threads (default: all cores, shared among the ranks; one rank in one process
                    keeps an inherited $OMP_NUM_THREADS)
  --weights W       map (default: the checkpoint's pages, shared; read in at load with progress,
                    at once when cached) or copy (read once onto 2 MiB pages whatever the cache
                    holds; slower to load)
  --cache DIR       build cache (default $MISTRAL_COMPILE_CACHE, else $XDG_CACHE_HOME/mistral-compile or ~/.cache/mistral-compile)
  --json            machine-readable output, no progress
  --verbose         stack traces and a compiler's full output on errors`;

/**
 * The model directory --model names. plan and build take a params.json or its directory, so
 * --model does too: a params.json means the directory it is in, where the checkpoint lies beside it.
 */
export function modelDir(values: Record<string, unknown>): string {
  if (typeof values.model !== 'string') throw new UsageError('--model', undefined, 'is required', 'pass a directory with params.json and consolidated.safetensors (make one with mistral-compile random-weights)');
  const dir = basename(values.model) === 'params.json' ? dirname(values.model) : values.model;
  checkCheckpoint(dir);
  return dir;
}

/**
 * Says what is wrong with --model's weights before loading, in terms of --model: the loader reads
 * DIR/consolidated.safetensors and would only name that path ("no such file ... pass the path of a
 * .safetensors file", or ENOTDIR for a file), which is no fix for --model.
 */
function checkCheckpoint(dir: string): void {
  let isDir: boolean;
  try {
    isDir = statSync(dir).isDirectory();
  } catch {
    return;  // missing or unreadable: loading names the path and the fix
  }
  if (!isDir) throw new UsageError('--model', undefined, `${dir} is a file, not a model directory`, 'pass the directory that holds params.json and consolidated.safetensors, or its params.json');
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;  // unreadable: loading names the path and the fix
  }
  // No params.json either: loading says so first, with its own fix. Shards are read as one checkpoint
  // (runtime/checkpoint-files.ts), which names a missing shard itself.
  if (names.includes('consolidated.safetensors') || !names.includes('params.json') || names.some(isShardName)) return;
  throw new UsageError('--model', undefined, `${dir} has no consolidated.safetensors (nor its shards, consolidated-00001-of-0000N.safetensors ...)`,
    'pass a directory with params.json and consolidated.safetensors (make one with mistral-compile random-weights)');
}

export function loadOptions(values: Record<string, string | boolean | undefined>): LoadOptions {
  return {
    target: choiceArg('--target', values.target as string | undefined, TARGETS, 'cpu'),
    tp: values.tp === undefined ? undefined : Number(choiceArg('--tp', values.tp as string, TP_SIZES.map(String), '1')) as TpSize,
    maxSeqLen: values['max-seq-len'] === undefined ? undefined : intArg('--max-seq-len', values['max-seq-len'] as string, 0, 1, 1 << 24),
    maxTokens: intArg('--max-tokens-per-call', values['max-tokens-per-call'] as string | undefined, 512, 1, 65536),
    threads: values.threads === undefined ? undefined : intArg('--threads', values.threads as string, 0, 1, 1024),
    cacheDir: values.cache as string | undefined,
    archs: values.arch === undefined ? undefined : parseArchs(values.arch as string),
    weights: choiceArg('--weights', values.weights as string | undefined, ['map', 'copy'] as const, 'map'),
    distributed: 'env',
  };
}

/** Before anything is built: a prompt that cannot fit the model's context is refused now, not after minutes of compiling. */
export function checkPromptFits(dir: string, options: LoadOptions, length: number): void {
  checkSequenceFits(loadModelConfig(dir, { maxSeqLen: options.maxSeqLen }), length);
}
