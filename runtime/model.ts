import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { availableParallelism, freemem } from 'node:os';
import { join } from 'node:path';
import { buildPlanLibrary, type BuildProgress } from '../compiler/build/build.js';
import { loadModelConfig } from '../compiler/config/load.js';
import type { ModelConfig } from '../compiler/config/model.js';
import { buildPlan } from '../compiler/plan/build-plan.js';
import { allLayersRolling } from '../compiler/plan/memory.js';
import type { Plan, Target, TpSize } from '../compiler/plan/types.js';
import { showValue } from '../compiler/errors.js';
import { WeightsError } from '../compiler/weights/errors.js';
import { checkCheckpointMatchesPlan, checkpointDtype, rankWeightViews } from './checkpoint.js';
import { readCheckpoint, type Checkpoint } from './checkpoint-files.js';
import { EnvironmentError, MachineError, RuntimeError } from './errors.js';
import { checkDistributed, distributedFromEnv, type DistributedOptions } from './distributed.js';
import type { NativeAddon, NativeCompiledLibrary, NativeDistGroup, NativeMappedFile, NativeModelInstance, NativeTpGroup } from './native.js';
import { loadNativeAddon } from './native-loader.js';
import { sampleToken, seededUniform } from './sampling.js';

export interface LoadOptions {
  target?: Target;
  tp?: TpSize;
  /** Context to allocate the KV cache for (default: params.json's max_seq_len, else 32768). */
  maxSeqLen?: number;
  /** Prefill chunk: most tokens per native call (default 512). */
  maxTokens?: number;
  /** OpenMP threads (default: all cores). Takes effect for the first library loaded in a process. */
  threads?: number;
  /** Build cache directory. */
  cacheDir?: string;
  /** GPU architectures of a cuda build (default sm_90a, sm_80). */
  archs?: readonly string[];
  /**
   * How the weights reach memory: 'map' the checkpoint (the default: read into the page cache at
   * load with progress, at once when the cache holds it; pages shared with every process that maps
   * the file; on 2 MiB pages when the page cache reads the file for this mapping, bench/RESULTS.md
   * change 13), or 'copy' it once into private memory on 2 MiB pages
   * whatever the page cache holds (transparent huge pages where the kernel offers them), for a
   * longer load. A GPU model copies to the device either way.
   */
  weights?: 'map' | 'copy';
  /**
   * One process per rank (torchrun style): this process loads and runs only `rank`'s shard and meets
   * the other ranks over TCP (runtime/distributed.ts). 'env' reads RANK, WORLD_SIZE, MASTER_ADDR,
   * MASTER_PORT, LOCAL_RANK, LOCAL_WORLD_SIZE (none set, or WORLD_SIZE=1: one process holds every
   * rank, as without this option). tp, when given, must equal the world size.
   */
  distributed?: DistributedOptions | 'env';
  onProgress?: (event: LoadProgress) => void;
}

export type LoadProgress =
  | BuildProgress
  /** The checkpoint being read into memory (page cache) before the model is created: `fraction` of `bytes` done. */
  | { stage: 'read'; path: string; bytes: number; fraction: number }
  | { stage: 'weights'; path: string; bytes: number; seconds: number; rankSeconds: number[]; copied: boolean }
  | { stage: 'join'; rank: number; world: number; address: string }
  /** The config was read: what normalization decided for the user (defaults chosen, keys ignored), before anything is built. */
  | { stage: 'config'; path: string; notes: readonly string[] };

export interface GenerateOptions {
  maxTokens: number;
  /** 0 (the default) is greedy. */
  temperature?: number;
  /** Nucleus sampling mass (default 1). */
  topP?: number;
  seed?: number;
  /** Token ids that end generation; the stop token is not yielded. */
  stop?: readonly number[];
}

/** A sequence of one model (LoadedModel.sequence()): its tokens, and its KV cache kept between its calls. */
export interface ModelSequence {
  /** The tokens run so far, in order. */
  readonly tokens: readonly number[];
  /** Runs `tokens` after this sequence's own: the logits of every one of them (allLogits, the default) or of the last. */
  forward(tokens: readonly number[], allLogits?: boolean): Promise<Float32Array[]>;
  /** Lets go of its saved cache; its later calls are refused. */
  close(): void;
}

export interface LoadedModel {
  readonly config: ModelConfig;
  readonly plan: Plan;
  readonly library: string;
  /** This process's rank and the number of ranks when each rank runs in a process of its own. */
  readonly distributed: { rank: number; world: number } | undefined;
  /** Logits of every position of `tokens` as a new sequence: one Float32Array [vocab_size] per token. */
  logits(tokens: readonly number[]): Promise<Float32Array[]>;
  /**
   * Continues the current sequence (or starts one at startPos 0): runs `tokens` at startPos..,
   * returns the logits of every token (allLogits) or of the last one. The current sequence is the
   * one the KV cache holds now, that of the last call on the model, whichever caller made it.
   */
  forward(tokens: readonly number[], startPos: number, allLogits?: boolean): Promise<Float32Array[]>;
  /**
   * Streams new token ids after `prompt` (a new sequence). Other calls may run between its steps:
   * its KV cache is saved and put back around them, so its tokens are those it gives alone (where a
   * snapshot cannot be kept, it replays its sequence instead: see the README).
   */
  generate(prompt: readonly number[], options: GenerateOptions): AsyncGenerator<number, void, void>;
  /**
   * A sequence of its own on this model, for callers that share it: each sequence's forward() runs
   * after that sequence's own tokens, whatever other calls ran meanwhile (its KV cache is saved and
   * put back around them, as a generation's is).
   */
  sequence(): ModelSequence;
  /**
   * The most positions one sequence may reach: max_seq_len, or MAX_POSITIONS where every layer's
   * cache is a ring (generate() ends there).
   */
  readonly maxPositions: number;
  close(): void;
}

/**
 * The libraries' failures that are the machine's (runtime/errors.ts MachineError), by their own
 * wording (templates/cuda/model.cu.hbs: check_device, device_alloc, cuda_error; templates/cpu/model.cpp.hbs): no GPU or driver, a
 * rank's GPU missing, no code for this GPU, too little shared memory a block or memory, a GPU that is busy.
 */
const MACHINE_FAILURE = new RegExp('mc_(?:create|check_device) failed: ((?:no CUDA device|this library has no code for|this model\'s kernels need|out of (?:device |host )?memory' +
  '|CUDA error in [^:]*: .*\\((?:cudaErrorMemoryAllocation|cudaErrorDevicesUnavailable|cudaErrorNoKernelImageForDevice|cudaErrorUnsupportedPtxVersion' +
  '|cudaErrorInsufficientDriver|cudaErrorNoDevice), code \\d+\\))[\\s\\S]*)$');

/** A library's refusal of an MC_CUDA_* variable (mc_device.cuh, check_environment): name, value, what it accepts, fix. */
const ENVIRONMENT_FAILURE = /mc_(?:create|check_device) failed: (MC_CUDA_\w+)=("[^"]*") in the environment is not ([^;]*); (.*)$/;

/** Our fix for a machine failure whose message gives none. */
function machineFix(reason: string): string {
  if (/^no CUDA device|cudaErrorInsufficientDriver|cudaErrorNoDevice/.test(reason)) return 'run where an NVIDIA GPU and its driver are visible (nvidia-smi lists it), or use --target cpu';
  if (/cudaErrorDevicesUnavailable/.test(reason)) return 'the GPU is busy or in exclusive-process mode: free it (nvidia-smi shows who holds it), or pick another with CUDA_VISIBLE_DEVICES';
  if (/cudaErrorNoKernelImageForDevice|cudaErrorUnsupportedPtxVersion/.test(reason)) return 'rebuild with --arch for this GPU (nvidia-smi --query-gpu=compute_cap), or update its driver';
  return 'free some memory, or rebuild with a smaller --max-seq-len';
}

/**
 * The driver probe's answer (runtime/addon/src/cuda_probe.cpp) as a MachineError: no driver library,
 * no device (cuInit's 100, or none listed) is "no CUDA device"; any other cuInit failure (a driver
 * too old for a container's compatibility libraries, a GPU lost after suspend) is the driver's.
 */
function driverProblem(reason: string): MachineError {
  if (/^cuInit returned (?!100\b)|^cuDeviceGetCount returned/.test(reason)) {
    return new MachineError('--target cuda', undefined, `the NVIDIA driver cannot be initialised: ${reason}`,
      'check the driver (nvidia-smi; after a suspend, reload it), or use --target cpu');
  }
  return new MachineError('--target cuda', undefined, `no CUDA device: ${reason}`, machineFix('no CUDA device'));
}

/** A library's or the addon's one-line message, "problem; fix", split at its last "; " (no fix: undefined). */
function splitFix(line: string): { problem: string; fix: string | undefined } {
  const cut = line.lastIndexOf('; ');
  return cut < 0 ? { problem: line, fix: undefined } : { problem: line.slice(0, cut), fix: line.slice(cut + 2) };
}

/**
 * Runs a call into a library that checks the machine (mc_check_device, mc_create), turning a
 * failure of the machine's into a MachineError: the library's message, with its own fix where it
 * gives one ("...; rebuild with ..."), else ours; a refused MC_CUDA_* variable into an
 * EnvironmentError. Any other failure passes through unchanged.
 */
export function withMachineErrors<T>(target: Target, create: () => T): T {
  try {
    return create();
  } catch (err) {
    const env = err instanceof Error ? ENVIRONMENT_FAILURE.exec(err.message) : null;
    if (env !== null) {
      const error = new EnvironmentError('environment', env[1]!, `${env[2]} is not ${env[3]}`, env[4]!);
      error.details = (err as Error).message;
      throw error;
    }
    const m = err instanceof Error ? MACHINE_FAILURE.exec(err.message) : null;
    if (m === null) throw err;
    const { problem, fix } = splitFix(m[1]!);
    const error = new MachineError(`--target ${target}`, undefined, problem, fix ?? machineFix(problem));
    error.details = (err as Error).message;
    throw error;
  }
}

/** Memory this process may still fill: the host's available memory (MemAvailable), or its cgroup's limit where lower. */
export function memoryAvailable(): number {
  return Math.min(freemem(), process.availableMemory?.() ?? Infinity);
}

/**
 * Positions one sequence may have where every layer's cache is a ring (so max_seq_len does not
 * bound them): 2^30, far below INT32_MAX so that the kernels' int position arithmetic (a key tile
 * past the last position, a decode split's end) never overflows. The libraries refuse the same.
 */
export const MAX_POSITIONS = 2 ** 30;

/**
 * The most positions one sequence of this model may reach: max_seq_len, or MAX_POSITIONS where
 * every layer's cache is a ring (rings bound no position; the cap keeps the kernels' int position
 * arithmetic far from overflowing). The config alone decides it (compiler/plan/memory.ts allLayersRolling).
 */
export function maxPositionsOf(config: ModelConfig): number {
  return allLayersRolling(config) ? MAX_POSITIONS : config.max_seq_len;
}

/** Throws, in one line with the fix, when a sequence of `length` positions does not fit the model. */
export function checkSequenceFits(config: ModelConfig, length: number): void {
  if (length <= maxPositionsOf(config)) return;
  if (maxPositionsOf(config) === MAX_POSITIONS) {
    throw new RuntimeError('tokens', undefined, `${length} positions pass the ${MAX_POSITIONS} one sequence may have`, 'start a new sequence at position 0');
  }
  throw new RuntimeError('tokens', undefined, `${length} positions exceed the context of ${config.max_seq_len} (max_seq_len)`,
    'shorten the prompt, or load with a larger maxSeqLen (--max-seq-len)');
}

/** The most OpenMP threads loadModel accepts (a count far past any machine's cores is a mistake). */
export const MAX_THREADS = 1024;

/** The largest KV snapshot kept in one ArrayBuffer (Node 20's limit); a generation whose cache is larger replays instead. */
const MAX_SNAPSHOT_BYTES = 2 ** 32;

/** Bytes read into memory per step of readIntoMemory: ~0.1-1 s of a disk, so progress moves smoothly. */
export const READ_STEP_BYTES = 256 * 2 ** 20;

/**
 * Reads the mapped checkpoint into the page cache step by step (MappedFile.populate), reporting each
 * step. Not for a private copy (in memory already), and not when the file is larger than `available`
 * (memoryAvailable() less what the model allocates beside it): it would evict its own first pages
 * before the copy to a GPU or the first forward reads them, so those read the file themselves.
 */
export async function readIntoMemory(file: Pick<NativeMappedFile, 'size' | 'populate' | 'copied'>, path: string, onProgress: LoadOptions['onProgress'],
  available: number, step = READ_STEP_BYTES): Promise<void> {
  if (file.copied || file.size > available) return;
  for (let offset = 0; offset < file.size; offset += step) {
    const length = Math.min(step, file.size - offset);
    let done: boolean;
    try {
      done = await file.populate(offset, length);
    } catch (err) {
      // The addon's line names the file and ends in its fix ("...; load it again ...").
      const { problem, fix } = splitFix((err as Error).message.replace(`${path}: `, ''));
      throw new WeightsError(path, undefined, `cannot be read into memory: ${problem}`, fix ?? 'load it again once it is no longer being written');
    }
    if (!done) return;  // a kernel before Linux 5.14: the library's copy reads the file itself, without steps
    // A file of one step reads in well under a second: no progress to show.
    if (file.size > step) onProgress?.({ stage: 'read', path, bytes: file.size, fraction: (offset + length) / file.size });
  }
}

/** Compiles (or reuses) the model's library and loads its weights from DIR/consolidated.safetensors (or its shards). */
export async function loadModel(dir: string, options: LoadOptions = {}): Promise<LoadedModel> {
  // The API takes plain data from JavaScript callers too: a wrong type is one line, not a TypeError deep inside.
  if (typeof dir !== 'string' || dir === '') throw new RuntimeError('loadModel', 'dir', `is ${showValue(dir)}, not a model directory`, 'pass the path of a directory with params.json and consolidated.safetensors');
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new RuntimeError('loadModel', 'options', `is ${showValue(options)}, not an object`, 'pass an options object such as { target: \'cpu\' }, or leave it out');
  }
  const requested = options.distributed === 'env' ? distributedFromEnv() : options.distributed;
  const distributed = requested === undefined ? undefined : checkDistributed(requested);
  if (distributed !== undefined && options.tp !== undefined && options.tp !== distributed.world) {
    throw new RuntimeError('loadModel options', 'tp', `is ${options.tp} but the world has ${distributed.world} ranks (WORLD_SIZE)`,
      `run ${options.tp} processes, or pass tp ${distributed.world}`);
  }
  // Checked here: OpenMP reads a bad count with a warning and ignores it, and a huge one fails to
  // create its threads inside the native library, which ends the process.
  if (options.threads !== undefined && !(Number.isSafeInteger(options.threads) && options.threads >= 1 && options.threads <= MAX_THREADS)) {
    throw new RuntimeError('loadModel options', 'threads', `must be an integer from 1 to ${MAX_THREADS} (got ${String(options.threads)})`, `pass e.g. ${availableParallelism()}, this machine's cores`);
  }
  if (options.weights !== undefined && options.weights !== 'map' && options.weights !== 'copy') {
    throw new RuntimeError('loadModel options', 'weights', `must be 'map' or 'copy' (got ${JSON.stringify(options.weights)})`, "pass 'map' (the default) or 'copy'");
  }
  // Inherited, it is OpenMP's to read, and libgomp takes a bad value with a warning and ignores it,
  // or fails to create a huge count of threads inside the library, which ends the process.
  const inherited = process.env.OMP_NUM_THREADS;
  if (options.threads === undefined && inherited !== undefined
    && !inherited.split(',').every((n) => /^\s*\d+\s*$/.test(n) && Number(n) >= 1 && Number(n) <= MAX_THREADS)) {
    throw new EnvironmentError('environment', 'OMP_NUM_THREADS', `${JSON.stringify(inherited)} is not a thread count from 1 to ${MAX_THREADS} (or a list of them)`,
      `unset it to use every core, or set it to e.g. ${availableParallelism()}`);
  }
  // One process per rank: each takes its share of this machine's cores.
  const threads = options.threads ?? (distributed === undefined ? availableParallelism() : Math.max(1, Math.floor(availableParallelism() / distributed.localWorld)));
  // Read by OpenMP when the first compiled library loads; later changes have no effect. A count
  // asked for here wins over one inherited from the environment; without one, the environment's stands.
  if (options.threads !== undefined || process.env.OMP_NUM_THREADS === undefined) process.env.OMP_NUM_THREADS = String(threads);
  const config = loadModelConfig(dir, { maxSeqLen: options.maxSeqLen });
  options.onProgress?.({ stage: 'config', path: config.source, notes: config.notes });
  const checkpoint = await readCheckpoint(dir);
  const plan = buildPlan(config, { target: options.target ?? 'cpu', tp: distributed?.world ?? options.tp ?? 1, dtype: checkpointDtype(checkpoint), maxTokens: options.maxTokens ?? 512 });
  checkCheckpointMatchesPlan(checkpoint, plan);
  const addon = loadNativeAddon();
  // A machine without a GPU or its driver is told so now, not after minutes of nvcc; the library's
  // own check (below) still judges the rest (code for this GPU, memory, the MC_CUDA_* switches).
  // (An addon built before the probe existed has none: the library's check then judges alone.)
  const noDevice = plan.options.target === 'cuda' && typeof addon.probeCudaDriver === 'function' ? addon.probeCudaDriver() : null;
  if (noDevice !== null) throw driverProblem(noDevice);
  const built = await buildPlanLibrary(plan, { cacheDir: options.cacheDir, archs: options.archs, onProgress: options.onProgress });

  const started = performance.now();
  const copy = options.weights === 'copy';
  // One mapping per file (a sharded checkpoint's shards are mapped, never merged); every weight points into its own.
  const files: NativeMappedFile[] = [];
  try {
    for (const header of checkpoint.files) {
      const file = new addon.MappedFile(header.path, copy);
      files.push(file);
      const now = statSync(header.path);
      if (file.size !== header.fileSize || file.identity.ino !== now.ino || now.size !== header.fileSize) {
        throw new WeightsError(header.path, undefined, 'changed while it was being loaded', 'load it again once it is no longer being written');
      }
    }
    const copied = files.every((f) => f.copied);
    const paths = checkpoint.files.map((h) => h.path);
    const library = new addon.CompiledLibrary(built.library);
    if (distributed !== undefined) {
      // This process's rank only: its slices of the checkpoint, then the meeting with the others.
      const d = distributed;
      const instance = withMachineErrors(plan.options.target, () => new addon.ModelInstance(library, files, rankWeightViews(checkpoint, plan, d.rank), d.rank, d.localRank));
      const seconds = (performance.now() - started) / 1000;
      options.onProgress?.({ stage: 'weights', path: checkpoint.display, bytes: checkpoint.bytes, seconds, rankSeconds: [seconds], copied });
      const group = await joinRank(addon, instance, library, checkpoint, config.vocab_size, threads, d, options.onProgress);
      return new Model(config, plan, built.library, group, { rank: d.rank, world: d.world }, paths);
    }
    // First what mc_create checks of the machine (GPU, driver, code for it, free device memory):
    // a load that cannot succeed should fail before it spends minutes reading the file.
    for (let rank = 0; rank < plan.options.tp; rank++) withMachineErrors(plan.options.target, () => library.checkDevice(rank, rank));
    // This process uses every byte of the checkpoint: read it into memory now, in steps, so that a cold
    // load (disk, network storage) shows its progress instead of stalling a GPU library's copy to the
    // device or the first forward pass (instant when the page cache holds the file). A rank of a
    // distributed group skips this: it reads only its slices, as its forward passes touch them.
    const besideWeights = plan.options.target === 'cpu' ? library.stateBytes * plan.options.tp : 0;  // KV cache and activations in host memory
    let read = 0;
    for (const [i, file] of files.entries()) {
      await readIntoMemory(file, paths[i]!, options.onProgress, memoryAvailable() - besideWeights - read);
      read += file.size;  // shards read before this one still hold their pages
    }
    // Every rank maps its slices straight from the mappings of the full checkpoint: no copies.
    const rankSeconds: number[] = [];
    const instances: NativeModelInstance[] = [];
    try {
      for (let rank = 0; rank < plan.options.tp; rank++) {
        const t = performance.now();
        instances.push(withMachineErrors(plan.options.target, () => new addon.ModelInstance(library, files, rankWeightViews(checkpoint, plan, rank), rank)));
        rankSeconds.push((performance.now() - t) / 1000);
      }
    } catch (err) {
      for (const instance of instances) instance.close();  // the ranks made so far give their (device) memory back now, not at GC
      throw err;
    }
    // Ranks share the cores: each gets its part, so that TP does not oversubscribe them.
    const group = new addon.TpGroup(instances, config.vocab_size, plan.options.tp === 1 ? 0 : Math.max(1, Math.floor(threads / plan.options.tp)));
    options.onProgress?.({ stage: 'weights', path: checkpoint.display, bytes: checkpoint.bytes, seconds: (performance.now() - started) / 1000, rankSeconds, copied });
    return new Model(config, plan, built.library, group, undefined, paths);
  } finally {
    for (const file of files) file.close(); // the instances keep their own hold on the mappings
  }
}

/**
 * The checkpoint as the ranks compare it: its layout (names, dtypes, shapes, offsets) and the first
 * 64 bytes of every tensor, so that two fine-tunes of one shape differ without hashing gigabytes.
 */
function checkpointFingerprint(checkpoint: Checkpoint): string {
  const hash = createHash('sha256');
  for (const header of checkpoint.files) {
    hash.update(`${header.fileSize}\0${JSON.stringify([...header.tensors].map(([name, t]) => [name, t.dtype, t.shape, t.begin, t.end]))}`);
    const fd = openSync(header.path, 'r');
    try {
      for (const t of header.tensors.values()) {
        const sample = Buffer.alloc(Math.min(64, t.end - t.begin));
        readSync(fd, sample, 0, sample.length, t.offset);
        hash.update(sample);
      }
    } finally {
      closeSync(fd);
    }
  }
  return hash.digest('hex').slice(0, 16);
}

/**
 * The rendezvous of this process's rank (`instance`, taken over) with the other ranks. Every rank
 * must load the same library build and checkpoint: rank 0 compares fingerprints.
 */
async function joinRank(addon: NativeAddon, instance: NativeModelInstance, library: NativeCompiledLibrary, checkpoint: Checkpoint,
  vocabSize: number, threads: number, d: Required<DistributedOptions>, onProgress: LoadOptions['onProgress']): Promise<NativeTpGroup> {
  let group: NativeDistGroup;
  try {
    group = new addon.DistGroup(instance, vocabSize, threads, d.rank, d.world);
  } finally {
    instance.close();  // the group holds the model now (or, on a throw, nobody needs it)
  }
  const fingerprint = `${library.specialization}, checkpoint ${checkpointFingerprint(checkpoint)}`;
  const address = `${d.masterAddr}:${d.masterPort}`;
  onProgress?.({ stage: 'join', rank: d.rank, world: d.world, address });
  try {
    await group.join(d.masterAddr, d.masterPort, Math.round(d.timeoutSeconds * 1000), fingerprint);
  } catch (err) {
    group.close();
    // The addon's message ends in its own fix; this one says where and how long the rank looked.
    throw new RuntimeError(`rank ${d.rank} of ${d.world}`, undefined, (err as Error).message,
      `rendezvous at ${address} (MASTER_ADDR:MASTER_PORT), waited up to ${d.timeoutSeconds} s (MC_DIST_TIMEOUT_S)`);
  }
  return group;
}

/** A generation's sequence: the tokens its KV cache holds, and that cache while other calls use the model. */
interface SequenceState {
  tokens: number[];
  saved: ArrayBuffer | undefined;
  /** Set when its generation has ended: its cache is no longer worth a copy. */
  done: boolean;
}

class Model implements LoadedModel {
  private nextPos = 0;
  /**
   * The generation whose sequence the KV cache holds (undefined: none, or a logits()/forward()
   * call's). A model has one KV cache: before another call changes it, the generation's cache is
   * saved (mc_kv_save), and it is put back before the generation's next step, so that what runs
   * between two steps changes neither its tokens nor its speed (a replay would cost a prefill a step
   * and round like a prefill, not like the decode steps it replaces).
   */
  private resident: SequenceState | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;
  /** Each step's row of logits: finite?, and its greedy token (native: logits_scan.cpp). */
  private readonly scanLogits = loadNativeAddon().scanLogits;

  constructor(readonly config: ModelConfig, readonly plan: Plan, readonly library: string, private readonly native: NativeTpGroup,
    readonly distributed: { rank: number; world: number } | undefined, private readonly weightsPaths: readonly string[]) {}

  logits(tokens: readonly number[]): Promise<Float32Array[]> {
    return this.forward(tokens, 0, true);
  }

  forward(tokens: readonly number[], startPos: number, allLogits = true): Promise<Float32Array[]> {
    return this.serialized(async () => {
      await this.claim(undefined);  // a generation's cache is saved before this call changes it
      return this.run(tokens, startPos, allLogits);
    });
  }

  async *generate(prompt: readonly number[], options: GenerateOptions): AsyncGenerator<number, void, void> {
    if (typeof options !== 'object' || options === null) {
      throw new RuntimeError('generate', 'options', `must be an object (got ${String(options)})`, 'pass e.g. { maxTokens: 16 }');
    }
    const temperature = options.temperature ?? 0;
    const topP = options.topP ?? 1;
    if (!(temperature >= 0) || !Number.isFinite(temperature)) throw new RuntimeError('generate', 'temperature', `must be a finite number >= 0 (got ${temperature})`, 'pass 0 for greedy decoding, or e.g. 0.7');
    if (!(topP > 0 && topP <= 1)) throw new RuntimeError('generate', 'topP', `must be in (0, 1] (got ${topP})`, 'pass e.g. 0.9, or 1 to disable');
    if (!Number.isSafeInteger(options.maxTokens) || options.maxTokens < 0) throw new RuntimeError('generate', 'maxTokens', `must be a non-negative integer (got ${options.maxTokens})`, 'pass the number of tokens to generate');
    const seed = options.seed ?? 0;
    if (!Number.isSafeInteger(seed) || seed < 0 || seed > 2 ** 31 - 1) throw new RuntimeError('generate', 'seed', `must be an integer from 0 to 2147483647 (got ${seed})`, 'pass e.g. 1');
    const stopIds = options.stop ?? [];
    // A string would pass as its characters; an id outside the vocabulary could never stop anything.
    const vocab = this.config.vocab_size;
    if (!Array.isArray(stopIds)) throw new RuntimeError('generate', 'stop', `must be an array of token ids (got ${JSON.stringify(stopIds)})`, 'pass e.g. [2]');
    const badStop = stopIds.find((t) => !Number.isSafeInteger(t) || t < 0 || t >= vocab);
    if (badStop !== undefined) {
      throw new RuntimeError('generate', 'stop', `holds ${JSON.stringify(badStop)}, not a token id from 0 to ${vocab - 1} (vocab_size ${vocab})`, 'pass ids of this model\'s vocabulary');
    }
    const stop = new Set(stopIds);
    const uniform = seededUniform(seed);
    const sequence: SequenceState = { tokens: [], saved: undefined, done: false };
    try {
      let [last] = await this.serialized(() => this.append(sequence, prompt, false));
      for (let i = 0; i < options.maxTokens; i++) {
        // One native pass (~0.1-0.4 ms a token in JS): a NaN or infinity refused, else the greedy token.
        const scan = this.scanLogits(last!);
        if (scan < 0) this.refuseNonFinite(last!, -scan - 1, sequence.tokens.length - 1);
        const token = temperature === 0 ? scan : sampleToken(last!, { temperature, topP }, uniform);
        if (stop.has(token)) return;
        const final = i + 1 === options.maxTokens || !this.fits(sequence.tokens.length + 1);
        if (final) sequence.done = true;  // what the consumer calls before it asks for more need not save this cache
        yield token;
        if (final) return;
        [last] = await this.serialized(() => this.append(sequence, [token], false));
      }
    } finally {
      sequence.done = true;
      if (this.resident === sequence) this.resident = undefined;
      sequence.saved = undefined;
    }
  }

  sequence(): ModelSequence {
    const state: SequenceState = { tokens: [], saved: undefined, done: false };
    const refuseClosedSequence = () => {
      if (state.done) throw new RuntimeError('sequence', undefined, 'is closed', 'make a new one with model.sequence()');
    };
    return {
      get tokens() {
        return state.tokens.slice();
      },
      forward: (tokens, allLogits = true) => this.serialized(async () => {
        refuseClosedSequence();
        return this.append(state, tokens, allLogits);
      }),
      close: () => {
        state.done = true;
        state.saved = undefined;
        if (this.resident === state) this.resident = undefined;
      },
    };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    // Closing waits for nothing: the addon defers the free until an in-flight forward settles.
    this.native.close();
  }

  /**
   * Refuses to sample from logits with a NaN or infinity: argmax would quietly pick token 0 (NaN
   * compares false) and every later step would build on it. logits() and forward() return such rows
   * as they are; generation stops here with what happened and what to try.
   */
  private refuseNonFinite(logits: Float32Array, bad: number, position: number): never {
    const fix = this.plan.options.dtype === 'f16'
      ? 'with f16 weights an activation beyond ±65504 overflows in the f16 matrix products: convert the checkpoint to bf16 (same size, the range of f32) or f32'
      : 'the checkpoint may hold NaN or infinite weights, or weights so large that the activations overflow float32';
    throw new RuntimeError('generate', `logits at position ${position}`, `hold ${logits[bad]} at token id ${bad}: the forward pass produced a non-finite value, so no token can be sampled`, fix);
  }

  get maxPositions(): number {
    return maxPositionsOf(this.config);
  }

  /** Whether a sequence of `length` tokens fits. */
  private fits(length: number): boolean {
    return length <= this.maxPositions;
  }

  /**
   * Runs `tokens` after `state`'s own (a generation's step, a sequence()'s call): with its cache in
   * place (as left, or put back) the new tokens alone, else (a library without snapshots, one too
   * large to keep) its whole sequence again. The rows of the new tokens (all, or the last).
   */
  private async append(state: SequenceState, tokens: readonly number[], allLogits: boolean): Promise<Float32Array[]> {
    // Refused before the cache is touched, so that a bad call costs the sequence nothing.
    this.refuseClosed();
    this.checkTokens(tokens);
    checkSequenceFits(this.config, state.tokens.length + tokens.length);
    try {
      const inPlace = state.tokens.length === 0 ? (await this.claim(undefined), true) : await this.claim(state);
      let rows = await this.run(inPlace ? tokens : [...state.tokens, ...tokens], inPlace ? state.tokens.length : 0, allLogits);
      if (!inPlace && allLogits) rows = rows.slice(state.tokens.length);
      for (const t of tokens) state.tokens.push(t);
      this.resident = state;
      return rows;
    } catch (err) {
      // What the cache holds of it is unknown now: its next call runs its whole sequence.
      if (this.resident === state) this.resident = undefined;
      state.saved = undefined;
      throw err;
    }
  }

  /**
   * Readies the KV cache for a call of `sequence` (undefined: a logits() or forward() call): another
   * generation's cache is saved first, and `sequence`'s own put back. Whether `sequence`'s cache is in
   * place. Snapshots are best effort: one that cannot be made or put back makes its generation
   * replay its sequence instead, and the call itself says what is wrong with the model, if anything.
   */
  private async claim(sequence: SequenceState | undefined): Promise<boolean> {
    const resident = this.resident;
    if (resident !== undefined && resident === sequence) return true;
    if (resident !== undefined) {
      this.resident = undefined;
      const saved = resident.done ? undefined : await this.snapshot(resident.tokens.length);
      if (!resident.done) resident.saved = saved;  // a generation that ended meanwhile keeps nothing
    }
    const saved = sequence?.saved;
    if (sequence === undefined || saved === undefined) return false;
    sequence.saved = undefined;
    try {
      this.nextPos = 0;  // until it is back, the cache holds no sequence
      await this.native.loadKv(saved, sequence.tokens.length);
    } catch {
      return false;
    }
    this.nextPos = sequence.tokens.length;
    this.resident = sequence;
    return true;
  }

  /**
   * A snapshot of the cache's `positions`, or undefined where the library has none or it cannot be
   * made: larger than one ArrayBuffer, or than half the memory available now (each paused
   * generation holds its snapshot in host memory; past that, generations replay instead).
   */
  private async snapshot(positions: number): Promise<ArrayBuffer | undefined> {
    if (this.closed || positions !== this.nextPos) return undefined;
    const bytes = this.native.kvBytes(positions);
    // Ranks in processes of their own must all decide alike: there, this machine's memory does not.
    const roomy = this.distributed !== undefined || bytes <= memoryAvailable() / 2;
    if (bytes < 0 || bytes > MAX_SNAPSHOT_BYTES || !roomy) return undefined;
    return this.native.saveKv(positions).catch(() => undefined);
  }

  /** One call at a time per model: concurrent callers wait their turn instead of corrupting the cache. */
  private serialized<T>(work: () => Promise<T>): Promise<T> {
    const result = this.queue.then(work, work);
    this.queue = result.catch(() => undefined);
    return result;
  }

  private async run(tokens: readonly number[], startPos: number, allLogits: boolean): Promise<Float32Array[]> {
    this.refuseClosed();
    this.checkTokens(tokens);
    if (!Number.isSafeInteger(startPos) || startPos < 0 || (startPos !== 0 && startPos !== this.nextPos)) {
      throw new RuntimeError('forward', 'startPos', `${startPos} does not continue the sequence (next position ${this.nextPos})`, `pass ${this.nextPos}, or 0 to start a new sequence`);
    }
    checkSequenceFits(this.config, startPos + tokens.length);
    const vocab = this.config.vocab_size;
    const chunk = this.plan.options.maxTokens;
    const rows: Float32Array[] = [];
    for (let begin = 0; begin < tokens.length; begin += chunk) {
      // close() between two chunks of a long prompt: said as for a call made after it.
      this.refuseClosed();
      const part = Int32Array.from(tokens.slice(begin, begin + chunk));
      const lastChunk = begin + chunk >= tokens.length;
      const wantAll = allLogits;
      let out: Float32Array;
      try {
        out = await this.native.forward(part, startPos + begin, wantAll);
      } catch (err) {
        // The addon's line on the mapped checkpoint (shrunk, rewritten, truncated mid-call) names
        // the file and ends in its fix: a WeightsError, as the same problem found at load is.
        const message = (err as Error).message;
        const path = this.weightsPaths.find((p) => message.startsWith(`${p}: `));
        if (path === undefined) throw err;
        const { problem, fix } = splitFix(message.slice(path.length + 2));
        throw new WeightsError(path, undefined, problem, fix ?? 'load it again once it is no longer being written');
      }
      this.nextPos = startPos + begin + part.length;
      if (wantAll) for (let t = 0; t < part.length; t++) rows.push(out.subarray(t * vocab, (t + 1) * vocab));
      else if (lastChunk) rows.push(out);
    }
    return rows;
  }

  private refuseClosed(): void {
    if (this.closed) throw new RuntimeError('model', undefined, 'is closed', 'load it again with loadModel()');
  }

  private checkTokens(tokens: readonly number[]): void {
    // A typed array of ids, yes; a DataView (a view without a length) is not a list of anything.
    if (!Array.isArray(tokens) && !(ArrayBuffer.isView(tokens) && !(tokens instanceof DataView))) throw new RuntimeError('tokens', undefined, 'must be an array of token ids', 'pass e.g. [1, 2, 3]');
    if (tokens.length === 0) throw new RuntimeError('tokens', undefined, 'is empty', 'pass at least one token id (e.g. the BOS id 1)');
    const vocab = this.config.vocab_size;
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i];
      if (typeof t !== 'number' || !Number.isInteger(t) || t < 0 || t >= vocab) {
        const problem = typeof t === 'number' && Number.isInteger(t) ? 'is out of range' : 'is not an integer';
        throw new RuntimeError('tokens', `[${i}]`, `token id ${String(t)} ${problem}`, `ids must be integers from 0 to ${vocab - 1} (vocab_size ${vocab})`);
      }
    }
  }
}
