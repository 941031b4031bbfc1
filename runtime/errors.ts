import { MistralCompileError } from '../compiler/errors.js';

/** A bad call into a loaded model: a token id out of range, a closed model, an empty prompt. */
export class RuntimeError extends MistralCompileError {}

/**
 * The machine cannot hold or run the model as built: no usable GPU or driver, a rank's GPU missing,
 * no code in the library for this GPU, too little (device) memory. Not a bug: the one line names
 * what is missing and what to do.
 */
export class MachineError extends MistralCompileError {}

/**
 * A switch of the process's environment that a library reads (MC_CUDA_GEMM, MC_CUDA_A16,
 * MC_CUDA_PREFETCH_MB, MC_CUDA_PDL, MC_CUDA_PDL_TRIGGER, MC_CUDA_GEMM_DEEP, MC_CUDA_DECODE, MC_CUDA_X,
 * MC_CUDA_ATTN_BLOCKS, MC_CUDA_ATTN_CLUSTER, MC_CUDA_DIAG_SKIP) holds a value it does not
 * accept: named, with what it accepts.
 */
export class EnvironmentError extends MistralCompileError {}
