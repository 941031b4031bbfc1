// The C ABI between a compiled model library (rendered from templates/, built by g++ or nvcc) and
// the runtime addon (runtime/addon). Plain C so that any compiler's output can be dlopen'ed.
// Bump MC_ABI_VERSION whenever a signature or a meaning below changes.
#ifndef MC_ABI_H
#define MC_ABI_H

#include <stddef.h>
#include <stdint.h>

#define MC_ABI_VERSION 3u

#ifdef __cplusplus
extern "C" {
#endif

/** One rank's view of one checkpoint tensor, pointing into the memory-mapped safetensors file. */
typedef struct mc_weight {
  /** First element of this rank's slice (row-major, the library's compile-time dtype). */
  const void* data;
  /** Elements between consecutive rows of the full checkpoint tensor (its shape[1]; 1 for vectors).
   *  A column slice (row-parallel split) keeps the full tensor's stride, so no copy is needed. */
  int64_t row_stride;
  /** Rows and columns of the slice, checked by the library against its compile-time shape. */
  int64_t rows;
  int64_t cols;
} mc_weight;

typedef struct mc_model mc_model;

/** Every compiled library exports these symbols. */
typedef uint32_t (*mc_abi_version_fn)(void);
/** The specialization key and source hash, e.g. "tiny-moe.cpu.f32.tp1 3f2a…". */
typedef const char* (*mc_specialization_fn)(void);
/** Number of weights mc_create expects, in the plan's weight order (checkpoint order). */
typedef int32_t (*mc_weight_count_fn)(void);
/** Name of weight i (checkpoint tensor name), for error messages. */
typedef const char* (*mc_weight_name_fn)(int32_t i);
/** Compile-time limits: most tokens per mc_forward call, context length, logits row length. */
typedef int32_t (*mc_max_tokens_fn)(void);
typedef int32_t (*mc_max_seq_len_fn)(void);
typedef int32_t (*mc_vocab_local_fn)(void);
/** Bytes the library allocates for its KV cache and activations (for reports). */
typedef int64_t (*mc_state_bytes_fn)(void);

/**
 * Creates a model over `weights` (not copied: they must outlive the model) for TP rank `rank`.
 * Allocates the KV cache and activation buffers. `device`: the GPU ordinal a GPU library runs on
 * (the runtime passes the rank when every rank lives in one process, LOCAL_RANK when each process
 * holds one rank); CPU libraries ignore it. On failure returns NULL and writes a one-line message
 * into err (at most errlen bytes, NUL-terminated).
 */
typedef mc_model* (*mc_create_fn)(const mc_weight* weights, int32_t n_weights, int32_t rank, int32_t device, char* err,
                                  size_t errlen);

/**
 * Runs tokens[0..n_tokens) at positions start_pos.. through the model, appending their keys and
 * values to the KV cache. Writes logits of the last token ([vocab_local]) or, with all_logits,
 * of every token ([n_tokens, vocab_local]) as float32. 1 <= n_tokens <= max_tokens. Returns 0, or
 * non-zero with a one-line message in err; the model's state is unchanged on a failed check.
 */
typedef int32_t (*mc_forward_fn)(mc_model* model, const int32_t* tokens, int32_t n_tokens, int32_t start_pos,
                                 float* logits, int32_t all_logits, char* err, size_t errlen);

typedef void (*mc_destroy_fn)(mc_model* model);

/**
 * Tensor parallelism (optional symbol mc_set_comm; libraries built for TP > 1 export it and refuse
 * to run until it is called). The ranks of one model run mc_forward concurrently, one thread each,
 * and meet in all_reduce_sum at the points the plan puts a collective.
 */
typedef struct mc_comm {
  void* ctx;
  int32_t world;
  /** OpenMP threads this rank may use (so that TP does not oversubscribe the cores); 0 = leave as is. */
  int32_t threads;
  /** Sums data[0..n) over all ranks, in place on every rank. Every rank calls it with the same n.
   *  For host memory (CPU libraries); GPU libraries reduce device memory through NCCL instead. */
  void (*all_reduce_sum)(void* ctx, int32_t rank, float* data, int64_t n);
  /** GPU libraries: the group's NCCL unique id, made once by mc_nccl_unique_id and given to every rank. */
  uint8_t nccl_id[128];
} mc_comm;

/**
 * Optional (GPU libraries): checks, before any weight is read, what mc_create checks of the machine
 * for rank `rank` on GPU `device`: that it exists, that this library has code for it, and that the
 * model fits its free memory. Returns 0, or non-zero with mc_create's one-line message in err.
 */
typedef int32_t (*mc_check_device_fn)(int32_t rank, int32_t device, char* err, size_t errlen);

/** Optional (GPU libraries): writes a new NCCL unique id for a group. Returns 0, or non-zero with err. */
typedef int32_t (*mc_nccl_unique_id_fn)(uint8_t* out128, char* err, size_t errlen);

/**
 * Attaches the communicator (copied; ctx must outlive the model). Returns 0, or non-zero with err.
 * A GPU library joins its NCCL group here, which blocks until every rank has called it: call it for
 * all ranks at once, from one thread each.
 */
typedef int32_t (*mc_set_comm_fn)(mc_model* model, const mc_comm* comm, char* err, size_t errlen);

/**
 * Optional (every library built from templates/ exports all three): a copy of the KV cache, so that
 * one model can hold several sequences in turn, each restored exactly as it was left (runtime/model.ts
 * swaps a generation's cache out while another call uses the model). A snapshot of `n_positions`
 * holds what positions [0, n_positions) wrote to each layer's cache (a ring's every slot once it has
 * wrapped), layer by layer, in the library's own layout; only the same library reads it back.
 */
/** Bytes of a snapshot of n_positions (0 <= n_positions), or -1 past the positions a sequence may reach. */
typedef int64_t (*mc_kv_bytes_fn)(int32_t n_positions);
/**
 * Copies the cache of the sequence the model holds into out[0..bytes): n_positions must be that
 * sequence's length (the next position) and bytes mc_kv_bytes(n_positions). Returns 0, or non-zero
 * with a one-line message in err; the model is unchanged either way.
 */
typedef int32_t (*mc_kv_save_fn)(mc_model* model, int32_t n_positions, void* out, int64_t bytes, char* err, size_t errlen);
/**
 * Puts a snapshot of mc_kv_save back: the model then holds that sequence and continues it at
 * n_positions. Returns 0, or non-zero with err (a failed copy leaves the model holding no sequence:
 * its next call must start at position 0).
 */
typedef int32_t (*mc_kv_load_fn)(mc_model* model, int32_t n_positions, const void* in, int64_t bytes, char* err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif  // MC_ABI_H
