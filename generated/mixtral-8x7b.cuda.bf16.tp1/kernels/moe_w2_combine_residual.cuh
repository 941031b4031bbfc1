// moe_w2_combine_residual: grouped expert W2 → scale by routing weight → combine the top-k expert outputs → residual add
// Rendered from templates/cuda/moe_w2_combine_residual.cuh.hbs for mixtral-8x7b.cuda.bf16.tp1; constants from the plan.
#pragma once
namespace moe_w2_combine_residual {
constexpr int DIM = 4096;               // dim from params.json
constexpr int HIDDEN = 14336;   // each expert's hidden units on this rank
constexpr int EXPERTS = 8;   // moe.num_experts
constexpr int TOP_K = 2;           // moe.num_experts_per_tok
constexpr int64_t EXPERT_STRIDE = int64_t(DIM) * HIDDEN;  // elements per expert in [EXPERTS, DIM, HIDDEN]

/**
 * Decode: one item per token with TOP_K sources (its chosen experts' hidden rows): each warp
 * streams 2 rows of every chosen expert's w2 and sums weight_k * (w2_k · hidden_k), so W2, the
 * routing weight, the combine and the residual add are one epilogue, with no atomics.
 */
struct Decode {
  using W = ::W;
  // 16 warps: x holds TOP_K hidden rows (2 x 56 KB for Mixtral), so one block per SM; 16 warps keep its loads in flight.
  static constexpr int K = HIDDEN, ROWS = 2, NSRC = TOP_K, WARPS = 16, GROUPS = (DIM + 1) / 2;
  static constexpr bool EARLY_ROWS = false;  // which expert's rows depends on the routing the previous kernels wrote
  const float* hidden;          // [T * TOP_K, HIDDEN] f32, grouped order
  const int32_t* pair_row;      // [T * TOP_K] grouped row of (token, slot)
  const int32_t* route_expert;  // [T, TOP_K]
  const float* route_weight;    // [T, TOP_K]
  const W* w2;                  // [EXPERTS, DIM, HIDDEN]
  float* residual;              // [T, DIM] f32
  __device__ bool load_x(int t, float* xs) const {
    for (int k = 0; k < TOP_K; ++k) mc::copy_row<HIDDEN>(hidden + int64_t(pair_row[t * TOP_K + k]) * HIDDEN, xs + k * HIDDEN);
    return true;
  }
  __device__ void rows(int t, int g, int k, const W* (&ptr)[ROWS], float& scale) const {
    mc::consecutive_rows<K>(w2 + route_expert[t * TOP_K + k] * EXPERT_STRIDE, 2 * g, DIM, ptr);
    scale = route_weight[t * TOP_K + k];
  }
  __device__ void epilogue(int t, int g, const float (&acc)[ROWS]) const {
    for (int r = 0; r < ROWS; ++r)
      if (2 * g + r < DIM) residual[int64_t(t) * DIM + 2 * g + r] += acc[r];
  }
};

/** Prefill: grouped tensor-core GEMM per expert into expert_out (grouped rows); combine() adds them up. */
struct Prefill {
  using W = ::W;
  static constexpr int K = HIDDEN;
  static constexpr bool PAIRED = false;
  const float* hidden;        // [T * TOP_K, HIDDEN] f32, grouped
  const int32_t* offsets;     // [EXPERTS + 1]
  const W* w2;                // [EXPERTS, DIM, HIDDEN]
  float* expert_out;          // [T * TOP_K, DIM] f32, grouped
  __device__ int m_count(int e) const { return offsets[e + 1] - offsets[e]; }
  __device__ int a16_first_row(int e) const { return offsets[e]; }  // A narrowed once: grouped rows, each expert's consecutive
  __device__ int n_count() const { return DIM; }
  __device__ float4 a(int e, int m, int k) const { return mc::load4(hidden + int64_t(offsets[e] + m) * HIDDEN + k); }
  __device__ const W* b_row(int e, int, int n) const { return w2 + e * EXPERT_STRIDE + int64_t(n) * HIDDEN; }
  __device__ void store(int e, int m, int n, float v0, float v1) const {
    const int64_t r = offsets[e] + m;
    expert_out[r * DIM + n] = v0;
    if (n + 1 < DIM) expert_out[r * DIM + n + 1] = v1;
  }
};

/** residual[t] += Σ_k route_weight[t, k] * expert_out[pair_row[t, k]]: one thread per element, no atomics. */
__global__ void __launch_bounds__(256) combine(const float* __restrict__ expert_out, const int32_t* __restrict__ pair_row,
                                               const float* __restrict__ route_weight, float* __restrict__ residual) {
  const int t = blockIdx.x;
  for (int d = threadIdx.x; d < DIM; d += blockDim.x) {
    float acc = 0.f;
    for (int k = 0; k < TOP_K; ++k) acc = fmaf(route_weight[t * TOP_K + k], expert_out[int64_t(pair_row[t * TOP_K + k]) * DIM + d], acc);
    residual[int64_t(t) * DIM + d] += acc;
  }
}

inline cudaError_t launch(const float* hidden, int T, const int32_t* offsets, const int32_t* pair_row, const int32_t* route_expert,
                          const float* route_weight, const W* w2, float* expert_out /*[T * TOP_K, DIM] scratch*/,
                          uint16_t* a16 /*[T * TOP_K, HIDDEN] scratch*/, float* residual, mc::L2Next next, cudaStream_t s) {
  if constexpr (mc::kTensorCores<W>) {
    if (T > 1) {
      if (cudaError_t e = mc::gemm(Prefill{hidden, offsets, w2, expert_out}, EXPERTS, T, DIM, s, a16)) return e;
      combine<<<T, 256, 0, s>>>(expert_out, pair_row, route_weight, residual);
      return cudaGetLastError();
    }
  }
  return mc::gemv(Decode{hidden, pair_row, route_expert, route_weight, w2, residual}, T, s, next);
}
inline cudaError_t prepare() {
  if (cudaError_t e = mc::gemv_prepare<Decode>()) return e;
  return mc::gemm_prepare<Prefill>();
}
}  // namespace moe_w2_combine_residual
