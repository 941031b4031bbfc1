// rmsnorm_output: final RMSNorm (norm) → output projection (output, vocabulary slice of this rank)
// Rendered from templates/cuda/rmsnorm_output.cuh.hbs for mistral-7b-v0.1.cuda.bf16.tp1; constants from the plan.
#pragma once
namespace rmsnorm_output {
constexpr int DIM = 4096;                 // dim from params.json
constexpr int VOCAB_LOCAL = 32000; // vocabulary rows of this rank
constexpr float EPS = 0.00001;        // norm_eps from params.json

/** One logits row per item: x = RMSNorm(residual[first + i]); each warp streams 2 vocabulary rows. */
struct Decode {
  using W = ::W;
  static constexpr int K = DIM, ROWS = 2, NSRC = 1, WARPS = 8, GROUPS = (VOCAB_LOCAL + 1) / 2;
  static constexpr bool EARLY_ROWS = true;  // weights only: streamed before waiting for the previous kernel
  const float* residual;      // [*, DIM] f32
  int first;
  const W* norm;              // [DIM] norm
  const W* output;            // [VOCAB_LOCAL, DIM]
  float* logits;              // [rows, VOCAB_LOCAL] f32
  __device__ bool load_x(int i, float* xs) const { mc::rmsnorm_row<DIM>(residual + int64_t(first + i) * DIM, norm, EPS, xs); return true; }
  __device__ void rows(int, int g, int, const W* (&ptr)[ROWS], float&) const { mc::consecutive_rows<K>(output, 2 * g, VOCAB_LOCAL, ptr); }
  __device__ void epilogue(int i, int g, const float (&acc)[ROWS]) const {
    for (int r = 0; r < ROWS; ++r)
      if (2 * g + r < VOCAB_LOCAL) logits[int64_t(i) * VOCAB_LOCAL + 2 * g + r] = acc[r];
  }
};

struct Prefill {
  using W = ::W;
  static constexpr int K = DIM;
  static constexpr bool PAIRED = false;
  mc::RowNorm<DIM, W> row_norm;  // RMSNorm(residual rows from `first`) * norm (rstd: gemm())
  const W* output;            // [VOCAB_LOCAL, DIM]
  float* logits;              // [rows, VOCAB_LOCAL] f32
  int rows;
  __device__ int m_count(int) const { return rows; }
  __device__ int n_count() const { return VOCAB_LOCAL; }
  __device__ float4 a(int, int m, int k) const { return row_norm.a(m, k); }
  __device__ const W* b_row(int, int, int n) const { return output + int64_t(n) * DIM; }
  __device__ void store(int, int m, int n, float v0, float v1) const {
    logits[int64_t(m) * VOCAB_LOCAL + n] = v0;
    if (n + 1 < VOCAB_LOCAL) logits[int64_t(m) * VOCAB_LOCAL + n + 1] = v1;
  }
};

/** logits[i] = (RMSNorm(residual[first + i]) * norm) · outputᵀ for i < rows. */
inline cudaError_t launch(const float* residual, int first, int rows, const W* norm, const W* output, float* rstd /*[rows] scratch*/,
                          uint16_t* a16 /*[rows, DIM] scratch*/, float* logits, mc::L2Next next, cudaStream_t s) {
  if constexpr (mc::kTensorCores<W>) {
    if (rows > 1) return mc::gemm(Prefill{mc::RowNorm<DIM, W>{residual + int64_t(first) * DIM, norm, EPS, rstd}, output, logits, rows}, 1, rows, VOCAB_LOCAL, s, a16);
  }
  return mc::gemv(Decode{residual, first, norm, output, logits}, rows, s, next);
}
inline cudaError_t prepare() {
  if (cudaError_t e = mc::gemv_prepare<Decode>()) return e;
  return mc::gemm_prepare<Prefill>();
}
}  // namespace rmsnorm_output
