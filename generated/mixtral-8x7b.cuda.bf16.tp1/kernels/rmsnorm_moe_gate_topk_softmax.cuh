// rmsnorm_moe_gate_topk_softmax: RMSNorm (ffn_norm) → gate projection → top-2 of 8 experts → softmax over the chosen logits
// Rendered from templates/cuda/rmsnorm_moe_gate_topk_softmax.cuh.hbs for mixtral-8x7b.cuda.bf16.tp1; constants from the plan.
#pragma once
namespace rmsnorm_moe_gate_topk_softmax {
constexpr int DIM = 4096;                 // dim from params.json
constexpr int EXPERTS = 8;     // moe.num_experts
constexpr int TOP_K = 2;             // moe.num_experts_per_tok
constexpr float EPS = 0.00001;        // norm_eps from params.json
constexpr int THREADS = 256;

/**
 * One block per token: normed = RMSNorm(residual) * ffn_norm (kept in f32 for the experts); gate
 * logits = normed · gateᵀ, a warp per expert; the TOP_K largest (ties to the lower index) and a
 * softmax over those TOP_K only, as Mistral routes. With one token (decode) it also writes what
 * moe_group_by_expert would (offsets, rows, pair_row): its TOP_K distinct experts in ascending
 * order, which saves that one-block kernel and its boundary in every layer of a decode step.
 */
__global__ void __launch_bounds__(THREADS) kernel(const float* __restrict__ residual /*[T, DIM] f32*/, const W* __restrict__ norm /*[DIM]*/,
                                                  const W* __restrict__ gate /*[EXPERTS, DIM]*/, float* __restrict__ normed /*[T, DIM] f32*/,
                                                  int32_t* __restrict__ route_expert /*[T, TOP_K]*/, float* __restrict__ route_weight /*[T, TOP_K]*/,
                                                  int32_t* __restrict__ offsets /*[EXPERTS + 1]*/, int32_t* __restrict__ rows /*[TOP_K]*/,
                                                  int32_t* __restrict__ pair_row /*[TOP_K]*/) {
  extern __shared__ float4 gate_smem[];
  float* xs = reinterpret_cast<float*>(gate_smem);
  __shared__ float logits[EXPERTS];
  const int t = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  // A warp's first gate row streams while the block waits for the residual and normalizes it: the
  // weights are no earlier kernel's output, and the norm's round trips would otherwise come first.
  mc::RowStream<DIM, W, 1> stream;
  const W* row[1] = {gate + int64_t(warp) * DIM};
  if (warp < EXPERTS) stream.load(row, lane);
  mc::wait_for_previous_kernel();  // under MC_CUDA_PDL=all (mc::launch_between): the residual comes from wo
  mc::rmsnorm_row<DIM>(residual + int64_t(t) * DIM, norm, EPS, xs);
  __syncthreads();
  for (int i = threadIdx.x; i < DIM; i += THREADS) normed[int64_t(t) * DIM + i] = xs[i];
  for (int e = warp; e < EXPERTS; e += THREADS / 32) {
    if (e != warp) {  // later rows (more experts than warps) start here
      row[0] = gate + int64_t(e) * DIM;
      stream.load(row, lane);
    }
    float acc[1] = {0.f};
    stream.run(mc::XShared{xs}, row, lane, acc);
    acc[0] = mc::warp_sum(acc[0]);
    if (lane == 0) logits[e] = acc[0];
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  bool taken[EXPERTS] = {};
  int32_t* ex = route_expert + int64_t(t) * TOP_K;
  float* wt = route_weight + int64_t(t) * TOP_K;
  for (int k = 0; k < TOP_K; ++k) {
    int best = -1;
    for (int e = 0; e < EXPERTS; ++e)
      if (!taken[e] && (best < 0 || logits[e] > logits[best])) best = e;
    taken[best] = true;
    ex[k] = best;
    wt[k] = logits[best];
  }
  const float top = wt[0];  // the largest: subtracting it keeps expf() in range
  float sum = 0.f;
  for (int k = 0; k < TOP_K; ++k) sum += (wt[k] = expf(wt[k] - top));
  for (int k = 0; k < TOP_K; ++k) wt[k] /= sum;
  if (gridDim.x != 1) return;
  // One token: moe_group_by_expert's stable counting sort of its pairs (slot k → expert ex[k]), the
  // experts being distinct: pair k's grouped row is the number of chosen experts below ex[k].
  for (int k = 0; k < TOP_K; ++k) {
    int rank = 0;
    for (int j = 0; j < TOP_K; ++j) rank += ex[j] < ex[k];
    rows[rank] = k;
    pair_row[k] = rank;
  }
  for (int e = 0; e <= EXPERTS; ++e) {
    int below = 0;
    for (int k = 0; k < TOP_K; ++k) below += ex[k] < e;
    offsets[e] = below;
  }
}

/** With T = 1 the grouping (offsets, rows, pair_row) is written too, and moe_group_by_expert need not run. */
inline cudaError_t launch(const float* residual, int T, const W* norm, const W* gate, float* normed, int32_t* route_expert, float* route_weight,
                          int32_t* offsets, int32_t* rows, int32_t* pair_row, cudaStream_t s) {
  return mc::launch_between(kernel, dim3(T), dim3(THREADS), DIM * sizeof(float), s, residual, norm, gate, normed, route_expert, route_weight,
                            offsets, rows, pair_row);
}
inline cudaError_t prepare() { return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(DIM * sizeof(float))); }
}  // namespace rmsnorm_moe_gate_topk_softmax
