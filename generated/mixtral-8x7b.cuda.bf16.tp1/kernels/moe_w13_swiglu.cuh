// moe_w13_swiglu: grouped expert W1 and W3 over each expert's tokens → SwiGLU epilogue
// Rendered from templates/cuda/moe_w13_swiglu.cuh.hbs for mixtral-8x7b.cuda.bf16.tp1; constants from the plan.
#pragma once
namespace moe_w13_swiglu {
constexpr int DIM = 4096;               // dim from params.json
constexpr int HIDDEN = 14336;   // each expert's hidden units on this rank
constexpr int EXPERTS = 8;   // moe.num_experts
constexpr int TOP_K = 2;           // moe.num_experts_per_tok
constexpr int64_t EXPERT_STRIDE = int64_t(2) * HIDDEN * DIM;  // elements per expert in [EXPERTS, 2 * HIDDEN, DIM]

/**
 * The expert of grouped row r: offsets[e] <= r < offsets[e + 1], i.e. how many of offsets[1 ..
 * EXPERTS) are <= r (offsets ascend). Counted with every load issued at once: a search that stopped
 * at e loaded offsets one after another, up to e + 1 L2 round trips before a warp's first weight load.
 * Bounded by EXPERTS, so that offsets that do not cover r (zeros where MC_CUDA_DIAG_SKIP left the
 * routing out) give the last expert, never a read past the array.
 */
__device__ __forceinline__ int expert_of(const int32_t* offsets, int r) {
  int e = 0;
#pragma unroll
  for (int i = 1; i < EXPERTS; ++i) e += offsets[i] <= r;
  return e;
}

/** Decode: one item per grouped (token, slot) row, so only the chosen experts' weights are read. */
struct Decode {
  using W = ::W;
  static constexpr int K = DIM, ROWS = 2, NSRC = 1, WARPS = 8, GROUPS = HIDDEN;
  static constexpr bool EARLY_ROWS = false;  // which expert's rows depends on the routing the previous kernels wrote
  const float* normed;        // [T, DIM] f32
  const int32_t* offsets;     // [EXPERTS + 1]
  const int32_t* rows_;       // [T * TOP_K] token * TOP_K + slot, grouped by expert
  const W* w13;               // [EXPERTS, 2 * HIDDEN, DIM]: each expert's w1 rows, then its w3 rows
  float* hidden;              // [T * TOP_K, HIDDEN] f32, grouped order
  __device__ bool load_x(int r, float* xs) const { mc::copy_row<DIM>(normed + int64_t(rows_[r] / TOP_K) * DIM, xs); return true; }
  __device__ void rows(int r, int u, int, const W* (&ptr)[ROWS], float&) const {
    const W* base = w13 + expert_of(offsets, r) * EXPERT_STRIDE;
    ptr[0] = base + int64_t(u) * DIM;
    ptr[1] = base + int64_t(HIDDEN + u) * DIM;
  }
  __device__ void epilogue(int r, int u, const float (&acc)[ROWS]) const { hidden[int64_t(r) * HIDDEN + u] = mc::silu(acc[0]) * acc[1]; }
};

/** Prefill: grouped tensor-core GEMM, one grid slice per expert over that expert's rows (gathered A). */
struct Prefill {
  using W = ::W;
  static constexpr int K = DIM;
  static constexpr bool PAIRED = true;
  const float* normed;
  const int32_t* offsets;
  const int32_t* rows_;
  const W* w13;
  float* hidden;
  __device__ int m_count(int e) const { return offsets[e + 1] - offsets[e]; }
  __device__ int a16_first_row(int e) const { return offsets[e]; }  // A narrowed once: grouped rows, each expert's consecutive
  __device__ int n_count() const { return HIDDEN; }
  __device__ float4 a(int e, int m, int k) const { return mc::load4(normed + int64_t(rows_[offsets[e] + m] / TOP_K) * DIM + k); }
  __device__ const W* b_row(int e, int which, int u) const { return w13 + e * EXPERT_STRIDE + int64_t(which * HIDDEN + u) * DIM; }
  __device__ void store_pair(int e, int m, int u, float a0, float a1, float b0, float b1) const {
    const int64_t r = offsets[e] + m;
    hidden[r * HIDDEN + u] = mc::silu(a0) * b0;
    if (u + 1 < HIDDEN) hidden[r * HIDDEN + u + 1] = mc::silu(a1) * b1;
  }
};

/**
 * hidden[row] = silu(x · w1ᵀ) ⊙ (x · w3ᵀ) for every grouped row, x the normed input of its token.
 * No mc::L2Next: the w2 rows read next are the chosen experts', one range per expert.
 */
inline cudaError_t launch(const float* normed, int T, const int32_t* offsets, const int32_t* rows, const W* w13,
                          uint16_t* a16 /*[T * TOP_K, DIM] scratch*/, float* hidden, cudaStream_t s) {
  if constexpr (mc::kTensorCores<W>) {
    if (T > 1) return mc::gemm(Prefill{normed, offsets, rows, w13, hidden}, EXPERTS, T, HIDDEN, s, a16);
  }
  return mc::gemv(Decode{normed, offsets, rows, w13, hidden}, T * TOP_K, s);
}
inline cudaError_t prepare() {
  if (cudaError_t e = mc::gemv_prepare<Decode>()) return e;
  return mc::gemm_prepare<Prefill>();
}
}  // namespace moe_w13_swiglu
