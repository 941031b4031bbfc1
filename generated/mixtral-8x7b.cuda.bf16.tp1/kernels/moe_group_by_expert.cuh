// moe_group_by_expert: counting sort of (token, slot) pairs by expert → per-expert offsets
// Rendered from templates/cuda/moe_group_by_expert.cuh.hbs for mixtral-8x7b.cuda.bf16.tp1; constants from the plan.
#pragma once
namespace moe_group_by_expert {
constexpr int EXPERTS = 8;  // moe.num_experts
constexpr int TOP_K = 2;          // moe.num_experts_per_tok
constexpr int THREADS = (EXPERTS + 31) / 32 * 32;
static_assert(THREADS <= 1024, "one thread per expert");

/**
 * Counting sort of the T * TOP_K (token, slot) pairs by expert, one thread per expert, stable (the
 * CPU backend's order), so each expert's weights are streamed once for all of its tokens:
 * rows[offsets[e] .. offsets[e+1]) = t * TOP_K + slot, and pair_row is the inverse map.
 */
__global__ void __launch_bounds__(THREADS) kernel(const int32_t* __restrict__ route_expert /*[T, TOP_K]*/, int T,
                                                  int32_t* __restrict__ offsets /*[EXPERTS + 1]*/, int32_t* __restrict__ rows /*[T * TOP_K]*/,
                                                  int32_t* __restrict__ pair_row /*[T * TOP_K]*/) {
  __shared__ int32_t start[EXPERTS + 1];
  const int e = threadIdx.x, n = T * TOP_K;
  mc::wait_for_previous_kernel();  // under MC_CUDA_PDL=all (mc::launch_between): the routing comes from the gate
  if (e < EXPERTS) {
    int32_t count = 0;
    for (int i = 0; i < n; ++i) count += route_expert[i] == e;
    start[e + 1] = count;
  }
  __syncthreads();
  if (e == 0) {
    start[0] = 0;
    for (int x = 0; x < EXPERTS; ++x) start[x + 1] += start[x];
    for (int x = 0; x <= EXPERTS; ++x) offsets[x] = start[x];
  }
  __syncthreads();
  if (e < EXPERTS) {
    int32_t next = start[e];
    for (int i = 0; i < n; ++i)
      if (route_expert[i] == e) rows[next] = i, pair_row[i] = next, ++next;
  }
}

inline cudaError_t launch(const int32_t* route_expert, int T, int32_t* offsets, int32_t* rows, int32_t* pair_row, cudaStream_t s) {
  return mc::launch_between(kernel, dim3(1), dim3(THREADS), 0, s, route_expert, T, offsets, rows, pair_row);
}
inline cudaError_t prepare() { return cudaSuccess; }
}  // namespace moe_group_by_expert
