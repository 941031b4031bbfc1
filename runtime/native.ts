/**
 * The one declaration of what the native addon (runtime/addon, mc_runtime.node) exports. Every
 * use of the addon goes through these types, so a change on one side fails `tsc`, not a run.
 * Keep in step with runtime/addon/src/*.cpp (each class's define()).
 */

/** Which file is mapped: fstat of the open descriptor, comparable with fs.statSync(path). */
export interface FileIdentity {
  dev: number;
  ino: number;
  mtimeMs: number;
  size: number;
}

/** A whole file mapped read-only (mmap PROT_READ, MAP_PRIVATE). */
export interface NativeMappedFile {
  readonly path: string;
  /** Bytes in the file. */
  readonly size: number;
  readonly identity: FileIdentity;
  readonly closed: boolean;
  /** Whether the bytes are a private copy on huge pages (copyToHugePages) rather than the mapped file. */
  readonly copied: boolean;
  /** A copy of the first min(maxBytes, size) bytes (for the safetensors header parser). Throws once closed. */
  readHeader(maxBytes: number): Uint8Array;  // a Buffer (Uint8Array in the published types, which need no @types/node)
  /**
   * Reads bytes [offset, offset + length) into the page cache off the JS thread (MADV_POPULATE_READ),
   * so that a reader after it (a GPU library's copy to the device) finds them in memory. Resolves
   * true when done (at once for a copy), false where the kernel lacks it (before Linux 5.14) or is
   * short of memory for it; rejects with one line naming the file and ending in its fix when it
   * cannot be read (truncated since it was mapped, an I/O error). Throws once closed, or for a range
   * outside the file.
   */
  populate(offset: number, length: number): Promise<boolean>;
  /**
   * Drops this object's hold on the mapping (idempotent). Models created over the file keep it
   * mapped until they are closed too.
   */
  close(): void;
}

/** A compiled model library, dlopen'ed for good (never unloaded; see FACTS.md). */
export interface NativeCompiledLibrary {
  readonly path: string;
  /** mc_specialization(): the specialization key and source hash. */
  readonly specialization: string;
  readonly weightCount: number;
  /** Checkpoint tensor names, in the order ModelInstance expects its weights. */
  readonly weightNames: readonly string[];
  /** Most tokens per forward call. */
  readonly maxTokens: number;
  readonly maxSeqLen: number;
  /** Length of one logits row on one rank. */
  readonly vocabLocal: number;
  /** Bytes of KV cache and activations one instance allocates. */
  readonly stateBytes: number;
  /**
   * mc_check_device: what mc_create checks of the machine for `rank` on GPU `device` (it exists, the
   * library has code for it, the model fits its free memory), before any weight is read. True when
   * checked; false for a library without devices (CPU); throws with the library's message otherwise.
   */
  checkDevice(rank: number, device: number): boolean;
}

/** One rank's slice of one checkpoint tensor, located in a mapped file (becomes an mc_weight). */
export interface NativeWeight {
  /** Which of ModelInstance's mapped files holds it (an index; 0 when absent, and with one file). */
  file?: number;
  /** Byte offset of the slice's first element from the start of the file (not of the data section). */
  offset: number | bigint;
  /** Elements between consecutive rows of the full tensor (shape[1]; 1 for vectors). */
  rowStride: number | bigint;
  rows: number | bigint;
  cols: number | bigint;
  /** Bytes from offset to the end of the slice's last row; [offset, offset + bytes) must lie in the file. */
  bytes: number | bigint;
}

/** One model (its KV cache) on one tensor-parallel rank. */
export interface NativeModelInstance {
  readonly closed: boolean;
  /**
   * Runs tokens at positions startPos.. off the JS thread. Resolves to logits [tokens.length,
   * vocabLocal] (allLogits) or [vocabLocal] (the last token's). Every failure is a rejection:
   * "model is closed", "model is busy: await the previous call" (one forward at a time), a bad
   * argument, or the library's own message (the model's state is then unchanged).
   */
  forward(tokens: Int32Array, startPos: number, allLogits: boolean): Promise<Float32Array>;
  /** The same on the JS thread; throws instead of rejecting. For tests and benchmarks. */
  forwardSync(tokens: Int32Array, startPos: number, allLogits: boolean): Float32Array;
  /** Frees the model (idempotent). With a forward in flight, that forward settles first. */
  close(): void;
}

/**
 * The ranks of one tensor-parallel model, run together (one thread each, meeting in all-reduces)
 * with their vocabulary slices of the logits gathered into full rows.
 */
export interface NativeTpGroup {
  readonly closed: boolean;
  /** Resolves to logits [tokens.length, vocabSize] (allLogits) or [vocabSize]. Same rejections as ModelInstance.forward. */
  forward(tokens: Int32Array, startPos: number, allLogits: boolean): Promise<Float32Array>;
  /**
   * Bytes of a KV-cache snapshot of nPositions (every rank's part), or -1 where there is none: a
   * closed group, a library without mc_kv_* (runtime/abi/mc_abi.h), positions past its reach.
   */
  kvBytes(nPositions: number): number;
  /** A snapshot of the sequence the model holds, nPositions long (its next position). One call at a time, as forward. */
  saveKv(nPositions: number): Promise<ArrayBuffer>;
  /** Puts a snapshot of saveKv back: the model then continues that sequence at nPositions. */
  loadKv(snapshot: ArrayBuffer, nPositions: number): Promise<void>;
  close(): void;
}

/**
 * This process's rank of a model whose ranks run in separate processes (runtime/addon/src/
 * dist_group.hpp, socket_group.hpp): every rank calls forward with the same arguments and gets the
 * same full logits.
 */
export interface NativeDistGroup extends NativeTpGroup {
  /**
   * Meets the other ranks (rank 0 listens on `port` on every interface, the others connect to
   * host:port, retrying until timeoutMs) and attaches the communicator. Rejects with a one-line
   * message: a rank missing after the timeout, a port in use, a rank with another `fingerprint`.
   */
  join(host: string, port: number, timeoutMs: number, fingerprint: string): Promise<void>;
  /** Why the group failed (a rank died, fell silent or failed its forward), or "" while it is healthy. */
  readonly failure: string;
}

export interface NativeAddon {
  /** The MC_ABI_VERSION this addon was built against (runtime/abi/mc_abi.h). */
  readonly abiVersion: number;
  /**
   * Asks the NVIDIA driver (libcuda.so.1, looked up at run time) whether it sees a GPU: null when it
   * does (or cannot tell), else the reason it does not, e.g. that libcuda.so.1 cannot be loaded.
   */
  probeCudaDriver(): string | null;
  /**
   * One row of logits (length >= 1): the index of its first largest value (the greedy token, as
   * runtime/sampling.ts's argmax), or -(i + 1) where value i is its first NaN or infinity. Native
   * (runtime/addon/src/logits_scan.cpp): in JS these passes cost ~0.1-0.4 ms a generated token.
   * Throws a TypeError for anything but a Float32Array, a RangeError for an empty one.
   */
  scanLogits(row: Float32Array): number;
  /**
   * Maps `path`, or with copyToHugePages reads it once into private memory on 2 MiB pages; throws
   * naming it when it is missing, not a regular file, empty, or changes while being copied.
   */
  MappedFile: new (path: string, copyToHugePages?: boolean) => NativeMappedFile;
  /** Loads `path`; throws naming it and the missing symbol or the ABI version that differs. */
  CompiledLibrary: new (path: string) => NativeCompiledLibrary;
  /**
   * Creates a model over `weights` (one per library.weightNames, in order) for TP rank `rank`.
   * Throws naming the weight whose bytes lie outside the file, or with mc_create's message.
   */
  ModelInstance: new (
    library: NativeCompiledLibrary,
    /** The checkpoint's file, or its shards (each weight's `file` indexes them). */
    mappedFile: NativeMappedFile | readonly NativeMappedFile[],
    weights: readonly NativeWeight[],
    rank: number,
    /** The GPU a GPU library runs on (default: rank). */
    device?: number,
  ) => NativeModelInstance;
  /**
   * Takes over `instances` (they are closed from then on; rank i = instances[i], all from one library built for TP =
   * instances.length) and gives each a communicator; threadsPerRank OpenMP threads each (0 = as is).
   */
  TpGroup: new (instances: readonly NativeModelInstance[], vocabSize: number, threadsPerRank: number) => NativeTpGroup;
  /**
   * Takes over `instance` (this process's rank of a library built for TP = world); `threads` OpenMP
   * threads (0 = as is). join() before the first forward.
   */
  DistGroup: new (instance: NativeModelInstance, vocabSize: number, threads: number, rank: number, world: number) => NativeDistGroup;
}
