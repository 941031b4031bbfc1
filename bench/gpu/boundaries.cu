// What the boundary between two decode GEMVs costs, and how much of it one persistent kernel with a
// grid barrier between the GEMVs would save (bench/RESULTS.md, run 17). Not a kernel of the product:
// a measurement that decides whether the product's decode step should become such a kernel.
//
// The chain: a dense Mistral layer's four decode GEMVs (wq|wk|wv, wo, w1|w3, w2) with the 7B's
// shapes, LAYERS times, random bf16 weights (the 7B's weight bytes but the embedding and the output
// matrix). Each GEMV's input is the one before's output as it is (each epilogue scales its outputs
// so that values stay ~1; w1|w3's adds its pairs of rows, w2's input), so every GEMV must wait for
// the previous one in full, as in decode.
//   kernels      the product's own decode GEMV (mc::gemv_kernel) once per GEMV, in one CUDA graph,
//                launched as decode launches it (PDL on sm_90: each starts its first weight loads
//                while the one before drains), each block copying x into shared memory first
//                (mc::copy_row, as the product's GEMVs do where they copy)
//   kernels-nopdl  the same without PDL
//   chain        the product's mc::gemv_chain (MC_CUDA_DECODE=chain): one cooperative launch a layer
//                over its four GEMVs, a grid barrier between two, in one CUDA graph
//   persistent   one cooperative kernel over the whole chain: the same warp code (mc::RowStream),
//                a grid barrier between two GEMVs, each warp's first loads of the next GEMV issued
//                before it arrives at the barrier; every warp its fixed share of rows, as gemv_kernel
//   persistent-dynamic  the same, the rows after each warp's first group handed out as warps ask
//                (a counter a GEMV): whether uneven finishing (the tail) is part of the cost
//   streaming    the same kernel with no barrier and no dependency (every GEMV reads one fixed input):
//                what streaming these weights costs with nothing to wait for, the floor of the others
//   kernels-x-wo-w2  kernels, wo and w2 reading x in the stream (mc::XRow), not from a copy: the
//                product's decode (MC_CUDA_X unset; wq|wk|wv and w1|w3 copy x to normalize it)
//   kernels-x-all  every GEMV so: what no x prologue at all would give (RESULTS runs 20-22; run 22's
//                RMSNorm folded into W, bench/gpu/experiments/run22-rms-in-stream.diff, comes to this)
// (variant − streaming) / GEMVs is the cost of a boundary. The limit is the weights ÷ --copy-gbs, the
// copy bandwidth of the same run as the kernel checker measures it (`kernels --copy-bandwidth`, which
// check.ts runs once for all its sections), so that the fractions compare with RESULTS.
//
// Checks (exit 1 if one fails): every variant but streaming gives bit-identical outputs (the same
// arithmetic in the same order, wherever x is read from; a block that read a stale input would change
// them), the last GEMV of each variant matches a float64 reference (relative L2 ≤ 1e-5, NaN fails),
// and so do streaming's and the first variant's last w1|w3.
//
//   boundaries --copy-gbs G [--layers N] [--reps N] [--blocks N] [--seed S] [--json]
// Shapes: -DMC_DIM, -DMC_HIDDEN, -DMC_QKV at compile time (the 7B's by default). The CUDA emulator
// (test/cuda/emu) runs it at small shapes and a few blocks (its cooperative launches take turns
// between grid barriers).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "mc_cuda.cuh"

#ifndef MC_DIM
#define MC_DIM 4096
#endif
#ifndef MC_HIDDEN
#define MC_HIDDEN 14336
#endif
#ifndef MC_QKV
#define MC_QKV 6144  // n_heads * head_dim + 2 * n_kv_heads * head_dim: 4096 + 2 * 1024
#endif

namespace {

using W = mc::bf16;
constexpr int DIM = MC_DIM, HIDDEN = MC_HIDDEN, QKV = MC_QKV;
static_assert(QKV >= DIM && HIDDEN >= DIM && DIM % 2 == 0 && HIDDEN % 2 == 0, "wo reads the first DIM outputs of wq|wk|wv; x0 holds every GEMV's K values");

#define CK(call)                                                                                     \
  do {                                                                                               \
    const cudaError_t e_ = (call);                                                                   \
    if (e_ != cudaSuccess) {                                                                         \
      std::fprintf(stderr, "boundaries: %s: %s (line %d)\n", #call, cudaGetErrorString(e_), __LINE__); \
      std::exit(2);                                                                                  \
    }                                                                                                \
  } while (0)

/**
 * Where a GEMV reads x (the output before it, as it is): a shared-memory copy made by each block
 * first (mc::copy_row, as the product's GEMVs copy theirs), or in the stream beside the weights
 * (mc::XRow, as the product's wo and w2 read theirs unless MC_CUDA_X=shared).
 */
enum XFrom { kShared = 0, kStream = 1 };

/**
 * One decode GEMV of the chain as a gemv_kernel Op: y = scale · W x (PAIRS: y[g] = scale · (row 2g +
 * row 2g + 1) · x, how w2's input comes from w1|w3's rows), two rows a warp as the product's GEMVs
 * read them. `prev` is x, the output before (or the fixed input where the chain is independent);
 * scale keeps the values ~1 from one GEMV to the next.
 */
template <int N, int IN, bool PAIRS>
struct GemvBase {
  using W = ::W;
  static constexpr int K = IN, R = N, ROWS = 2, NSRC = 1, WARPS = 8, GROUPS = N / 2;
  static constexpr bool EARLY_ROWS = true;  // weights only: streamed before waiting for the GEMV before
  const float* prev;
  const W* w;  // [R, K]
  float* y;    // [R] or [R / 2] (PAIRS)
  float scale;
  __device__ bool load_x(int, float* xs) const {
    mc::copy_row<K>(prev, xs);
    return true;
  }
  __device__ void rows(int, int g, int, const W* (&ptr)[ROWS], float&) const { mc::consecutive_rows<K>(w, 2 * g, R, ptr); }
  __device__ void epilogue(int, int g, const float (&acc)[ROWS]) const {
    if (PAIRS) y[g] = scale * (acc[0] + acc[1]);
    else y[2 * g] = scale * acc[0], y[2 * g + 1] = scale * acc[1];
  }
};
template <int N, int IN, bool PAIRS, int X> struct Gemv;
template <int N, int IN, bool PAIRS> struct Gemv<N, IN, PAIRS, kShared> : GemvBase<N, IN, PAIRS> {};
template <int N, int IN, bool PAIRS> struct Gemv<N, IN, PAIRS, kStream> : GemvBase<N, IN, PAIRS> {
  __device__ mc::XRow x_in(int, int) const { return {this->prev}; }
};
template <int X = kShared> using Qkv = Gemv<QKV, DIM, false, X>;
template <int X = kShared> using Wo = Gemv<DIM, DIM, false, X>;
template <int X = kShared> using W13 = Gemv<2 * HIDDEN, DIM, true, X>;
template <int X = kShared> using W2 = Gemv<DIM, HIDDEN, false, X>;
constexpr int GEMVS_PER_LAYER = 4;

/** Every layer's weights and the activations (one buffer per GEMV, reused by every layer). */
struct Chain {
  const W* const* w;  // [layers * 4] device pointers: wq|wk|wv, wo, w1|w3, w2
  int layers;
  const float* x0;    // [HIDDEN] the first input (and every input where independent)
  float *y_qkv, *y_wo, *y_w13, *y_w2;
  bool independent;
  // x ~ 1 and W uniform in [-1, 1] (variance 1/3): W x ~ sqrt(K / 3); w1|w3's pairs add two such rows.
  template <int X = kShared> __host__ __device__ Qkv<X> qkv(int l) const { return {{independent || l == 0 ? x0 : y_w2, w[4 * l], y_qkv, scale(DIM)}}; }
  template <int X = kShared> __host__ __device__ Wo<X> wo(int l) const { return {{independent ? x0 : y_qkv, w[4 * l + 1], y_wo, scale(DIM)}}; }
  template <int X = kShared> __host__ __device__ W13<X> w13(int l) const { return {{independent ? x0 : y_wo, w[4 * l + 2], y_w13, scale(DIM) * 0.70710678f}}; }
  template <int X = kShared> __host__ __device__ W2<X> w2(int l) const { return {{independent ? x0 : y_w13, w[4 * l + 3], y_w2, scale(HIDDEN)}}; }
  __host__ __device__ static float scale(int k) { return 1.0f / sqrtf(float(k) / 3.0f); }
};

constexpr size_t kSmemBytes = size_t(std::max(DIM, HIDDEN)) * sizeof(float);

/**
 * The whole chain in one launch (cooperative: every block resident), the product's chain pieces
 * (mc::chain_gemv, a grid barrier between two GEMVs unless `barriers` is off, each warp's first
 * loads of the next GEMV before it). DYNAMIC: groups after each warp's first handed out as warps
 * ask, from `tickets` ([GEMVs], zeroed); else every warp its fixed share, as gemv_kernel (a template
 * argument: the fixed kernel keeps its registers).
 */
template <bool DYNAMIC>
__global__ void __launch_bounds__(256, 2) persistent_kernel(const Chain c, unsigned* arrivals, unsigned* tickets, const bool barriers) {
  extern __shared__ float4 boundary_smem[];
  float* xs = reinterpret_cast<float*>(boundary_smem);
  const int lane = threadIdx.x & 31, warp = blockIdx.x * 8 + (threadIdx.x >> 5), warps = gridDim.x * 8;
  auto barrier = [&]() {
    if (barriers) mc::grid_barrier(arrivals);
  };
  auto ticket = [&](int l, int i) { return DYNAMIC ? tickets + GEMVS_PER_LAYER * l + i : nullptr; };
  mc::ChainEarly<W> early;
  mc::chain_first_loads(c.qkv(0), early, warp, lane);
#pragma unroll 1
  for (int l = 0; l < c.layers; ++l) {
    mc::chain_gemv(c.qkv(l), xs, early, warp, warps, lane, ticket(l, 0));
    mc::chain_first_loads(c.wo(l), early, warp, lane);
    barrier();
#if defined(MC_BOUNDARIES_FAULT)  // a seeded fault for the emulated test: the last layer's w1|w3 reads a stale wo output
    if (l + 1 < c.layers)
#endif
    mc::chain_gemv(c.wo(l), xs, early, warp, warps, lane, ticket(l, 1));
    mc::chain_first_loads(c.w13(l), early, warp, lane);
    barrier();
    mc::chain_gemv(c.w13(l), xs, early, warp, warps, lane, ticket(l, 2));
    mc::chain_first_loads(c.w2(l), early, warp, lane);
    barrier();
    mc::chain_gemv(c.w2(l), xs, early, warp, warps, lane, ticket(l, 3));
    if (l + 1 < c.layers) mc::chain_first_loads(c.qkv(l + 1), early, warp, lane);
    barrier();
  }
}

/** Uniform values in [-1, 1) as bf16, from the element's index and the seed (splitmix64). */
__global__ void fill_kernel(W* w, size_t n, uint64_t seed) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint64_t z = seed + 0x9e3779b97f4a7c15ull * (i + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    w[i] = __float2bfloat16_rn(float(double(z >> 11) * (2.0 / 9007199254740992.0) - 1.0));
  }
}

/** Every GEMV of one x source ready to launch (gemv_kernel's shared memory and grid). */
template <int X>
void prepare_gemvs() {
  CK(mc::gemv_prepare<Qkv<X>>());
  CK(mc::gemv_prepare<Wo<X>>());
  CK(mc::gemv_prepare<W13<X>>());
  CK(mc::gemv_prepare<W2<X>>());
}

float bf16_bits_to_float(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/** Median of `reps` replays of `graph`, in ms (after 3 untimed ones). */
double time_graph(cudaGraphExec_t graph, cudaStream_t s, int reps) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) CK(cudaGraphLaunch(graph, s));
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    CK(cudaEventRecord(a, s));
    CK(cudaGraphLaunch(graph, s));
    CK(cudaEventRecord(b, s));
    CK(cudaEventSynchronize(b));
    float t = 0;
    CK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

struct Variant {
  std::string name;
  double ms = 0;
  std::vector<float> y_wo, y_w13, y_w2;  // the last layer's: w1|w3's input, w2's input, the last output
};

std::vector<float> to_host(const float* p, size_t n) {
  std::vector<float> v(n);
  CK(cudaMemcpy(v.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost));
  return v;
}

/**
 * Relative L2 error against float64 of one GEMV's output y: y[r] = scale · W[r] · x (pairs: y[g] =
 * scale · (W[2g] + W[2g + 1]) · x), x = input (its first k values). W: bf16 bits, [rows, k].
 */
double gemv_error(const std::vector<uint16_t>& w, int rows, int k, const std::vector<float>& input, const std::vector<float>& y, float scale, bool pairs) {
  const std::vector<double> x(input.begin(), input.begin() + k);
  double num = 0, den = 0;
  for (int o = 0; o < (pairs ? rows / 2 : rows); ++o) {
    double ref = 0;
    for (int row = pairs ? 2 * o : o; row < (pairs ? 2 * o + 2 : o + 1); ++row)
      for (int i = 0; i < k; ++i) ref += double(bf16_bits_to_float(w[size_t(row) * k + i])) * x[size_t(i)];
    ref *= scale;
    const double d = double(y[size_t(o)]) - ref;
    num += d * d, den += ref * ref;
  }
  const double e = std::sqrt(num / den);
  return std::isfinite(e) && std::isfinite(num) ? e : INFINITY;
}

}  // namespace

int main(int argc, char** argv) {
  setenv("CUDA_MODULE_LOADING", "EAGER", 1);  // no kernel's first launch synchronizes the context (kernels.cu has why)
  int layers = 32, reps = 20, blocks = 0;
  double copy_gbs = 0;
  uint64_t seed = uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) std::fprintf(stderr, "boundaries: %s needs a value\n", a.c_str()), std::exit(2);
      return argv[++i];
    };
    if (a == "--layers") layers = std::atoi(value());
    else if (a == "--reps") reps = std::atoi(value());
    else if (a == "--blocks") blocks = std::atoi(value());
    else if (a == "--seed") seed = std::strtoull(value(), nullptr, 10);
    else if (a == "--copy-gbs") copy_gbs = std::atof(value());
    else if (a == "--json") json = true;
    else std::fprintf(stderr, "boundaries: unknown argument %s (usage: boundaries --copy-gbs G [--layers N] [--reps N] [--blocks N] [--seed S] [--json])\n", a.c_str()), std::exit(2);
  }
  if (layers < 1 || reps < 1 || blocks < 0)
    std::fprintf(stderr, "boundaries: --layers and --reps must be at least 1, --blocks at least 0 (0: every block the GPU holds)\n"), std::exit(2);
  if (!(copy_gbs > 0))
    std::fprintf(stderr, "boundaries: --copy-gbs G is needed: the device-to-device copy bandwidth of this GPU in GB/s (a kernel checker's --copy-bandwidth prints it)\n"), std::exit(2);

  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  prepare_gemvs<kShared>();
  prepare_gemvs<kStream>();
  mc::device_info().x_stream = true;  // mc::gemv reads x in the stream for the Ops that have x_in (kStream), as the product does by default
  int resident = 0;  // blocks of both persistent kernels that fit the GPU at once
  for (auto kernel : {persistent_kernel<false>, persistent_kernel<true>}) {
    CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kSmemBytes)));
    int per_sm = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, 256, kSmemBytes));
    resident = resident == 0 ? per_sm * mc::device_info().sms : std::min(resident, per_sm * mc::device_info().sms);
  }
  if (blocks == 0) blocks = resident;
  if (blocks > resident) std::fprintf(stderr, "boundaries: --blocks %d, but only %d blocks of the persistent kernel fit this GPU at once\n", blocks, resident), std::exit(2);

  // The weights: one allocation per matrix, as the product's loader makes them.
  const size_t sizes[GEMVS_PER_LAYER] = {size_t(QKV) * DIM, size_t(DIM) * DIM, size_t(2) * HIDDEN * DIM, size_t(DIM) * HIDDEN};
  std::vector<W*> weights(size_t(layers) * GEMVS_PER_LAYER);
  double weight_bytes = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    const size_t n = sizes[i % GEMVS_PER_LAYER];
    CK(cudaMalloc(&weights[i], n * sizeof(W)));
    fill_kernel<<<1024, 256>>>(weights[i], n, seed + i);
    CK(cudaGetLastError());
    weight_bytes += double(n) * sizeof(W);
  }
  const W** w_dev = nullptr;
  CK(cudaMalloc(&w_dev, weights.size() * sizeof(W*)));
  CK(cudaMemcpy(w_dev, weights.data(), weights.size() * sizeof(W*), cudaMemcpyHostToDevice));
  std::vector<float> x0(static_cast<size_t>(HIDDEN));  // where independent, every GEMV reads its first K values
  uint64_t z = seed;
  for (float& v : x0) z = z * 6364136223846793005ull + 1442695040888963407ull, v = float(double(z >> 11) * (2.0 / 9007199254740992.0) - 1.0);
  float *x0_dev = nullptr, *y = nullptr;
  unsigned* count = nullptr;  // [1 + GEMVs]: the barrier's arrivals, then each GEMV's ticket
  CK(cudaMalloc(&x0_dev, x0.size() * sizeof(float)));
  CK(cudaMemcpy(x0_dev, x0.data(), x0.size() * sizeof(float), cudaMemcpyHostToDevice));
  const size_t y_floats = size_t(QKV) + DIM + size_t(HIDDEN) + DIM;
  CK(cudaMalloc(&y, y_floats * sizeof(float)));
  const size_t counters = 1 + size_t(layers) * GEMVS_PER_LAYER;
  CK(cudaMalloc(&count, counters * sizeof(unsigned)));
  CK(cudaMemset(count, 0, counters * sizeof(unsigned)));  // mc::grid_barrier's counter starts at 0 (the persistent variants zero it again)
  const Chain dependent{w_dev, layers, x0_dev, y, y + QKV, y + QKV + DIM, y + QKV + DIM + HIDDEN, false};
  Chain independent = dependent;
  independent.independent = true;
  // The same chain for the host, which builds the kernels' and the product chain's Ops: its weight
  // pointers from host memory (w_dev is device memory: reading it on the host faults on a GPU, though
  // not on the emulator, whose device memory is the host's).
  Chain host = dependent;
  host.w = weights.data();
  std::vector<uint16_t> w13_last(size_t(2) * HIDDEN * DIM), w2_last(size_t(DIM) * HIDDEN);
  CK(cudaMemcpy(w13_last.data(), weights[weights.size() - 2], w13_last.size() * sizeof(uint16_t), cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(w2_last.data(), weights.back(), w2_last.size() * sizeof(uint16_t), cudaMemcpyDeviceToHost));

  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  // Each variant captured into one graph, replayed; the activations poisoned (NaN bits) before its first replay.
  auto capture = [&](auto&& record) {
    cudaGraph_t g;
    cudaGraphExec_t e;
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    record();
    CK(cudaStreamEndCapture(s, &g));
    CK(cudaGraphInstantiate(&e, g, 0));
    CK(cudaGraphDestroy(g));
    return e;
  };
  // One kernel a GEMV, x from where each GEMV's X (an XFrom, as std::integral_constant) says.
  auto kernels = [&](bool pdl, auto xq, auto xo, auto x13, auto x2) {
    return [&, pdl]() {
      mc::device_info().pdl = pdl && prop.major >= 9;  // mc::launch reads it at each launch (as decode's capture does)
      for (int l = 0; l < layers; ++l) {
        CK(mc::gemv(host.qkv<decltype(xq)::value>(l), 1, s));
        CK(mc::gemv(host.wo<decltype(xo)::value>(l), 1, s));
        CK(mc::gemv(host.w13<decltype(x13)::value>(l), 1, s));
        CK(mc::gemv(host.w2<decltype(x2)::value>(l), 1, s));
      }
    };
  };
  const std::integral_constant<int, kShared> shared;
  const std::integral_constant<int, kStream> stream;
  // The product's chain (MC_CUDA_DECODE=chain decodes a dense layer so): one cooperative launch a layer.
  if (cudaError_t e = mc::gemv_chain_prepare<Qkv<>, Wo<>, W13<>, W2<>>()) std::fprintf(stderr, "boundaries: gemv_chain_prepare: %s\n", cudaGetErrorString(e)), std::exit(2);
  auto chained = [&]() {
    for (int l = 0; l < layers; ++l) CK(mc::gemv_chain(count, s, host.qkv(l), host.wo(l), host.w13(l), host.w2(l)));
  };
  auto persistent = [&](const Chain& c, bool barriers, bool dynamic) {
    return [&, barriers, dynamic]() {
      CK(cudaMemsetAsync(count, 0, counters * sizeof(unsigned), s));
      cudaLaunchConfig_t config = {};
      config.gridDim = dim3(unsigned(blocks));
      config.blockDim = dim3(256);
      config.dynamicSmemBytes = kSmemBytes;
      config.stream = s;
      cudaLaunchAttribute attr[1];
      attr[0].id = cudaLaunchAttributeCooperative;  // refused, not hung, if the grid does not fit at once
      attr[0].val.cooperative = 1;
      config.attrs = attr;
      config.numAttrs = 1;
      CK(cudaLaunchKernelEx(&config, dynamic ? persistent_kernel<true> : persistent_kernel<false>, c, count, count + 1, barriers));
    };
  };
  const bool pdl_default = mc::device_info().pdl;
  std::vector<Variant> variants;
  auto run = [&](const std::string& name, auto&& record) {
    cudaGraphExec_t e = capture(record);
    CK(cudaMemset(y, 0xff, y_floats * sizeof(float)));
    Variant v{name};
    v.ms = time_graph(e, s, reps);
    CK(cudaStreamSynchronize(s));
    v.y_wo = to_host(dependent.y_wo, DIM);
    v.y_w13 = to_host(dependent.y_w13, HIDDEN);
    v.y_w2 = to_host(dependent.y_w2, DIM);
    CK(cudaGraphExecDestroy(e));
    variants.push_back(std::move(v));
  };
  run("kernels", kernels(pdl_default, shared, shared, shared, shared));
  run("kernels-nopdl", kernels(false, shared, shared, shared, shared));
  run("chain", chained);
  run("persistent", persistent(dependent, true, false));
  run("persistent-dynamic", persistent(dependent, true, true));
  run("streaming", persistent(independent, false, false));
  // x read in the stream: by wo and w2 only (the product's decode, whose wq|wk|wv and w1|w3 copy and
  // normalize theirs), by every GEMV (run 20's experiment C: what no prologue at all would give).
  run("kernels-x-wo-w2", kernels(pdl_default, shared, stream, shared, stream));
  run("kernels-x-all", kernels(pdl_default, stream, stream, stream, stream));
  run("kernels (again)", kernels(pdl_default, shared, shared, shared, shared));
  mc::device_info().pdl = pdl_default;

  // Checks: the dependent variants agree bit for bit, each last GEMV matches float64, and so does
  // the first variant's last w1|w3 (its pairs added in the epilogue).
  bool ok = true;
  std::string failures;
  const double e13 = gemv_error(w13_last, 2 * HIDDEN, DIM, variants[0].y_wo, variants[0].y_w13, Chain::scale(DIM) * 0.70710678f, true);
  if (!(e13 <= 1e-5)) ok = false, failures += " " + variants[0].name + " last w1|w3 off float64 (relative L2 " + std::to_string(e13) + ");";
  for (const Variant& v : variants) {
    // The chained variants' last w2 reads the w1|w3 output they left; streaming's reads x0.
    const bool chained = v.name != "streaming";
    if (chained && std::memcmp(v.y_w2.data(), variants[0].y_w2.data(), DIM * sizeof(float)) != 0) ok = false, failures += " " + v.name + " differs from kernels;";
    const double e = gemv_error(w2_last, DIM, HIDDEN, chained ? v.y_w13 : x0, v.y_w2, Chain::scale(HIDDEN), false);
    if (!(e <= 1e-5)) ok = false, failures += " " + v.name + " last GEMV off float64 (relative L2 " + std::to_string(e) + ");";
  }
  const double limit_ms = weight_bytes / (copy_gbs * 1e9) * 1e3;  // the weights read once at the copy's (read + write) rate, as RESULTS counts it
  const int gemvs = layers * GEMVS_PER_LAYER;
  const double floor_ms = std::find_if(variants.begin(), variants.end(), [](const Variant& v) { return v.name == "streaming"; })->ms;
  if (json) {
    std::printf("{\"device\":\"%s\",\"sms\":%d,\"blocks\":%d,\"layers\":%d,\"gemvs\":%d,\"weight_bytes\":%.0f,\"copy_gbs\":%.1f,\"limit_ms\":%.4f,\"ok\":%s,\"variants\":[",
                prop.name, mc::device_info().sms, blocks, layers, gemvs, weight_bytes, copy_gbs, limit_ms, ok ? "true" : "false");
    for (size_t i = 0; i < variants.size(); ++i)
      std::printf("%s{\"name\":\"%s\",\"ms\":%.4f,\"fraction\":%.4f,\"boundary_us\":%.3f}", i ? "," : "", variants[i].name.c_str(), variants[i].ms, limit_ms / variants[i].ms,
                  (variants[i].ms - floor_ms) * 1e3 / gemvs);
    std::printf("]}\n");
  } else {
    std::printf("%s, %d SMs, persistent grid %d blocks; %d layers, %d GEMVs, %.2f GB of bf16 weights; copy %.0f GB/s: limit %.3f ms\n", prop.name,
                mc::device_info().sms, blocks, layers, gemvs, weight_bytes / 1e9, copy_gbs, limit_ms);
    for (const Variant& v : variants)
      std::printf("%-20s %8.3f ms  %5.1f%% of the limit  %+7.2f us a boundary against streaming\n", v.name.c_str(), v.ms, 100 * limit_ms / v.ms, (v.ms - floor_ms) * 1e3 / gemvs);
  }
  if (!ok) std::fprintf(stderr, "boundaries: checks failed:%s\n", failures.c_str());
  return ok ? 0 : 1;
}
