// wo_residual: output projection (wo) → residual add
// Rendered from templates/cuda/wo_residual.cuh.hbs for mistral-7b-v0.1.cuda.bf16.tp1; constants from the plan.
#pragma once
namespace wo_residual {
constexpr int DIM = 4096;           // dim from params.json
constexpr int IN = 4096;       // this rank's query heads x head_dim

/** Decode: x = attn_out[t] (read in the stream unless MC_CUDA_X=shared); each warp streams 2 rows of wo; the residual add is the epilogue. */
struct Decode {
  using W = ::W;
  static constexpr int K = IN, ROWS = 2, NSRC = 1, WARPS = 8, GROUPS = (DIM + 1) / 2;
  static constexpr bool EARLY_ROWS = true;  // weights only: streamed before waiting for the previous kernel
  const float* attn_out;      // [T, IN] f32
  const W* wo;                // [DIM, IN]
  float* residual;            // [T, DIM] f32
  __device__ mc::XRow x_in(int t, int) const { return {attn_out + int64_t(t) * IN}; }
  __device__ bool load_x(int t, float* xs) const { mc::copy_row<IN>(attn_out + int64_t(t) * IN, xs); return true; }  // MC_CUDA_X=shared, and the decode chains
  __device__ void rows(int, int g, int, const W* (&ptr)[ROWS], float&) const { mc::consecutive_rows<K>(wo, 2 * g, DIM, ptr); }
  __device__ void epilogue(int t, int g, const float (&acc)[ROWS]) const {
    for (int r = 0; r < ROWS; ++r)
      if (2 * g + r < DIM) residual[int64_t(t) * DIM + 2 * g + r] += acc[r];
  }
};

/** Prefill: tensor-core GEMM, residual += in the epilogue (each element owned by one thread, or added atomically by each split). */
struct Prefill {
  using W = ::W;
  static constexpr int K = IN;
  static constexpr bool PAIRED = false;
  const float* attn_out;      // [T, IN] f32
  const W* wo;                // [DIM, IN]
  float* residual;            // [T, DIM] f32
  int T;
  __device__ int m_count(int) const { return T; }
  __device__ int n_count() const { return DIM; }
  __device__ float4 a(int, int m, int k) const { return mc::load4(attn_out + int64_t(m) * IN + k); }
  __device__ const W* b_row(int, int, int n) const { return wo + int64_t(n) * IN; }
  __device__ void store(int, int m, int n, float v0, float v1) const {
    residual[int64_t(m) * DIM + n] += v0;
    if (n + 1 < DIM) residual[int64_t(m) * DIM + n + 1] += v1;
  }
  /** The same, atomically: with few tokens gemm() splits K across blocks that each add a partial sum. */
  __device__ void store_add(int, int m, int n, float v0, float v1) const {
    atomicAdd(residual + int64_t(m) * DIM + n, v0);
    if (n + 1 < DIM) atomicAdd(residual + int64_t(m) * DIM + n + 1, v1);
  }
};

/** residual += attn_out · woᵀ. */
/** The decode GEMV's Op: what launch() runs for one token, and a link of a decode chain (mc::gemv_chain). */
inline Decode decode(const float* attn_out, const W* wo, float* residual) { return {attn_out, wo, residual}; }

inline cudaError_t launch(const float* attn_out, int T, const W* wo, float* residual, uint16_t* a16 /*[T, IN] scratch*/, mc::L2Next next, cudaStream_t s) {
  if constexpr (mc::kTensorCores<W>) {
    if (T > 1) return mc::gemm(Prefill{attn_out, wo, residual, T}, 1, T, DIM, s, a16);
  }
  return mc::gemv(decode(attn_out, wo, residual), T, s, next);
}
inline cudaError_t prepare() {
  if (cudaError_t e = mc::gemv_prepare<Decode>()) return e;
  return mc::gemm_prepare<Prefill>();
}
}  // namespace wo_residual
