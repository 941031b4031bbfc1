// w2_residual: W2 projection → residual add
// Rendered from templates/cuda/w2_residual.cuh.hbs for mistral-7b-v0.1.cuda.bf16.tp1; constants from the plan.
#pragma once
namespace w2_residual {
constexpr int DIM = 4096;               // dim from params.json
constexpr int HIDDEN = 14336;   // hidden_dim units of this rank

/** Decode: x = hidden[t] (read in the stream unless MC_CUDA_X=shared); each warp streams 2 rows of w2; the residual add is the epilogue. */
struct Decode {
  using W = ::W;
  static constexpr int K = HIDDEN, ROWS = 2, NSRC = 1, WARPS = 8, GROUPS = (DIM + 1) / 2;
  static constexpr bool EARLY_ROWS = true;  // weights only: streamed before waiting for the previous kernel
  const float* hidden;        // [T, HIDDEN] f32
  const W* w2;                // [DIM, HIDDEN]
  float* residual;            // [T, DIM] f32
  __device__ mc::XRow x_in(int t, int) const { return {hidden + int64_t(t) * HIDDEN}; }
  __device__ bool load_x(int t, float* xs) const { mc::copy_row<HIDDEN>(hidden + int64_t(t) * HIDDEN, xs); return true; }  // MC_CUDA_X=shared, and the decode chains
  __device__ void rows(int, int g, int, const W* (&ptr)[ROWS], float&) const { mc::consecutive_rows<K>(w2, 2 * g, DIM, ptr); }
  __device__ void epilogue(int t, int g, const float (&acc)[ROWS]) const {
    for (int r = 0; r < ROWS; ++r)
      if (2 * g + r < DIM) residual[int64_t(t) * DIM + 2 * g + r] += acc[r];
  }
};

struct Prefill {
  using W = ::W;
  static constexpr int K = HIDDEN;
  static constexpr bool PAIRED = false;
  const float* hidden;        // [T, HIDDEN] f32
  const W* w2;                // [DIM, HIDDEN]
  float* residual;            // [T, DIM] f32
  int T;
  __device__ int m_count(int) const { return T; }
  __device__ int n_count() const { return DIM; }
  __device__ float4 a(int, int m, int k) const { return mc::load4(hidden + int64_t(m) * HIDDEN + k); }
  __device__ const W* b_row(int, int, int n) const { return w2 + int64_t(n) * HIDDEN; }
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

/** residual += hidden · w2ᵀ. */
/** The decode GEMV's Op: what launch() runs for one token, and a link of a decode chain (mc::gemv_chain). */
inline Decode decode(const float* hidden, const W* w2, float* residual) { return {hidden, w2, residual}; }

inline cudaError_t launch(const float* hidden, int T, const W* w2, float* residual, uint16_t* a16 /*[T, HIDDEN] scratch*/, mc::L2Next next, cudaStream_t s) {
  if constexpr (mc::kTensorCores<W>) {
    if (T > 1) return mc::gemm(Prefill{hidden, w2, residual, T}, 1, T, DIM, s, a16);
  }
  return mc::gemv(decode(hidden, w2, residual), T, s, next);
}
inline cudaError_t prepare() {
  if (cudaError_t e = mc::gemv_prepare<Decode>()) return e;
  return mc::gemm_prepare<Prefill>();
}
}  // namespace w2_residual
