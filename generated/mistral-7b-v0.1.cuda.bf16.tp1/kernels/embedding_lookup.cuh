// embedding_lookup: token embedding lookup (vocabulary slice of this rank; other rows contribute zero)
// Rendered from templates/cuda/embedding_lookup.cuh.hbs for mistral-7b-v0.1.cuda.bf16.tp1; constants from the plan.
#pragma once
namespace embedding_lookup {
constexpr int DIM = 4096;                 // dim from params.json
constexpr int VOCAB_LOCAL = 32000; // vocabulary rows of this rank

/** residual[t] = tok_embeddings[tokens[t]] widened to f32; a token outside this rank's rows gives zeros. */
__global__ void __launch_bounds__(256) kernel(const int32_t* __restrict__ tokens /*[T]*/, int32_t vocab_start,
                                              const W* __restrict__ emb /*[VOCAB_LOCAL, DIM]*/, float* __restrict__ residual /*[T, DIM] f32*/) {
  const int t = blockIdx.x;
  const int32_t local = tokens[t] - vocab_start;
  const bool mine = local >= 0 && local < VOCAB_LOCAL;
  const W* row = emb + int64_t(mine ? local : 0) * DIM;
  float* out = residual + int64_t(t) * DIM;
  for (int i = threadIdx.x; i < DIM; i += blockDim.x) out[i] = mine ? mc::to_f32(row[i]) : 0.f;
}

/** A plain launch: the step's first kernel follows a host-to-device copy, not a kernel. */
inline cudaError_t launch(const int32_t* tokens, int T, int32_t vocab_start, const W* emb, float* residual, cudaStream_t s) {
  kernel<<<T, 256, 0, s>>>(tokens, vocab_start, emb, residual);
  return cudaGetLastError();
}
/** Reads the device's properties once (SM count for GEMV grids, PDL support) for every kernel of the model. */
inline cudaError_t prepare() { return mc::init_device_info(); }
}  // namespace embedding_lookup
