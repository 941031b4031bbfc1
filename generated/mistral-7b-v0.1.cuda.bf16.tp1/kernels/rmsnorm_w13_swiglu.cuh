// rmsnorm_w13_swiglu: RMSNorm (ffn_norm) → W1 and W3 projections → SwiGLU epilogue silu(w1·x) ⊙ (w3·x)
// Rendered from templates/cuda/rmsnorm_w13_swiglu.cuh.hbs for mistral-7b-v0.1.cuda.bf16.tp1; constants from the plan.
#pragma once
namespace rmsnorm_w13_swiglu {
constexpr int DIM = 4096;               // dim from params.json
constexpr int HIDDEN = 14336;   // hidden_dim units of this rank
constexpr float EPS = 0.00001;      // norm_eps from params.json

/** Decode: x = RMSNorm(residual[t]); each warp streams w1 row u and w3 row u together. */
struct Decode {
  using W = ::W;
  static constexpr int K = DIM, ROWS = 2, NSRC = 1, WARPS = 8, GROUPS = HIDDEN;
  static constexpr bool EARLY_ROWS = true;  // weights only: streamed before waiting for the previous kernel
  const float* residual;      // [T, DIM] f32
  const W* norm;              // [DIM] ffn_norm
  const W* w13;               // [2 * HIDDEN, DIM]: w1 rows, then w3 rows
  float* hidden;              // [T, HIDDEN] f32
  __device__ bool load_x(int t, float* xs) const { mc::rmsnorm_row<DIM>(residual + int64_t(t) * DIM, norm, EPS, xs); return true; }
  __device__ void rows(int, int u, int, const W* (&ptr)[ROWS], float&) const {
    ptr[0] = w13 + int64_t(u) * DIM;
    ptr[1] = w13 + int64_t(HIDDEN + u) * DIM;
  }
  __device__ void epilogue(int t, int u, const float (&acc)[ROWS]) const { hidden[int64_t(t) * HIDDEN + u] = mc::silu(acc[0]) * acc[1]; }
};

/** Prefill: PAIRED tensor-core GEMM (w1 and w3 interleaved per 8 columns), SwiGLU in the epilogue. */
struct Prefill {
  using W = ::W;
  static constexpr int K = DIM;
  static constexpr bool PAIRED = true;
  mc::RowNorm<DIM, W> row_norm;  // RMSNorm(residual) * ffn_norm (rstd: gemm())
  const W* w13;               // [2 * HIDDEN, DIM]
  float* hidden;              // [T, HIDDEN] f32
  int T;
  __device__ int m_count(int) const { return T; }
  __device__ int n_count() const { return HIDDEN; }
  __device__ float4 a(int, int m, int k) const { return row_norm.a(m, k); }
  __device__ const W* b_row(int, int which, int u) const { return w13 + int64_t(which * HIDDEN + u) * DIM; }
  __device__ void store_pair(int, int m, int u, float a0, float a1, float b0, float b1) const {
    hidden[int64_t(m) * HIDDEN + u] = mc::silu(a0) * b0;
    if (u + 1 < HIDDEN) hidden[int64_t(m) * HIDDEN + u + 1] = mc::silu(a1) * b1;
  }
};

/** hidden = silu(xn · w1ᵀ) ⊙ (xn · w3ᵀ), xn = RMSNorm(residual) * ffn_norm. */
/** The decode GEMV's Op: what launch() runs for one token, and a link of a decode chain (mc::gemv_chain). */
inline Decode decode(const float* residual, const W* norm, const W* w13, float* hidden) { return {residual, norm, w13, hidden}; }

inline cudaError_t launch(const float* residual, int T, const W* norm, const W* w13, float* rstd /*[T] scratch*/, uint16_t* a16 /*[T, DIM] scratch*/,
                          float* hidden, mc::L2Next next, cudaStream_t s) {
  if constexpr (mc::kTensorCores<W>) {
    if (T > 1) return mc::gemm(Prefill{mc::RowNorm<DIM, W>{residual, norm, EPS, rstd}, w13, hidden, T}, 1, T, HIDDEN, s, a16);
  }
  return mc::gemv(decode(residual, norm, w13, hidden), T, s, next);
}
inline cudaError_t prepare() {
  if (cudaError_t e = mc::gemv_prepare<Decode>()) return e;
  return mc::gemm_prepare<Prefill>();
}
}  // namespace rmsnorm_w13_swiglu
