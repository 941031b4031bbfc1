// Every fused CUDA kernel on its own against a float64 reference, on fresh random inputs, with its
// outputs poisoned (all bits set: NaN for floats, -1 for ints) before each launch so that an
// element the kernel forgot to write fails. Built by bench/gpu/kernel-check.ts against the rendered
// sources of one config (-I <sources> -DMC_WEIGHT=<type>), one binary per config and dtype:
//   nvcc -std=c++17 -O3 -Xcompiler -fopenmp -gencode=... -I <src> -DMC_WEIGHT=mc::bf16 test/gpu/kernels.cu
// Prints one line per check ("ok"/"FAIL", kernel, tokens, relative L2) and exits non-zero on a failure.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "mc_cuda.cuh"

using W = MC_WEIGHT;
using KV = W;

#include "kernels/embedding_lookup.cuh"
#include "kernels/rmsnorm_qkv_rope_cache.cuh"
#include "kernels/attention_gqa_window.cuh"
#include "kernels/wo_residual.cuh"
#include "kernels/rmsnorm_output.cuh"
#if __has_include("kernels/rmsnorm_w13_swiglu.cuh")
#define MC_DENSE 1
#include "kernels/rmsnorm_w13_swiglu.cuh"
#include "kernels/w2_residual.cuh"
#else
#define MC_DENSE 0
#include "kernels/rmsnorm_moe_gate_topk_softmax.cuh"
#include "kernels/moe_group_by_expert.cuh"
#include "kernels/moe_w13_swiglu.cuh"
#include "kernels/moe_w2_combine_residual.cuh"
#endif

namespace {
using Vec = std::vector<double>;

void ck(cudaError_t e, const char* what, int line) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "CUDA error at kernels.cu:%d in %s: %s\n", line, what, cudaGetErrorString(e));
    std::exit(2);
  }
}
#define CK(...) ck((__VA_ARGS__), #__VA_ARGS__, __LINE__)

// ---- random inputs (a fresh seed per run, printed) ----
uint64_t g_seed;
/** splitmix64 of (seed, stream, index): parallel and reproducible for a given seed. */
double uniform(uint64_t stream, uint64_t i) {
  uint64_t z = g_seed ^ (stream * 0x9E3779B97F4A7C15ull) ^ (i * 0xBF58476D1CE4E5B9ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return double(z >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0;  // [-1, 1)
}
uint64_t g_stream = 1;

inline float hf(float x) { return x; }
inline float hf(mc::bf16 x) { return __bfloat162float(x); }
inline float hf(mc::f16 x) { return __half2float(x); }
template <typename T> T hcast(float x);
template <> float hcast<float>(float x) { return x; }
// Rounded to nearest even by its bits (every input here is finite): CUDA's host __float2bfloat16_rn,
// which also handles NaN, was ~5% of an emulated run (the long-context checks draw 16M-value caches).
template <> mc::bf16 hcast<mc::bf16>(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  u += 0x7FFFu + ((u >> 16) & 1u);
  __nv_bfloat16_raw r;
  r.x = uint16_t(u >> 16);
  return mc::bf16(r);
}
template <> mc::f16 hcast<mc::f16>(float x) { return __float2half_rn(x); }

/** n values center + scale * U(-1, 1), stored as T (the stored values are what the reference reads). */
template <typename T>
std::vector<T> rand_vec(size_t n, double scale, double center = 0.0) {
  std::vector<T> v(n);
  const uint64_t s = g_stream++;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < int64_t(n); ++i) v[i] = hcast<T>(float(center + scale * uniform(s, i)));
  return v;
}
template <typename T> Vec widen(const std::vector<T>& v) {
  Vec out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = hf(v[i]);
  return out;
}

// ---- device buffers ----
template <typename T> T* upload(const std::vector<T>& h) {
  T* d = nullptr;
  CK(cudaMalloc(&d, std::max<size_t>(1, h.size()) * sizeof(T)));
  CK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}
/** A device buffer with every bit set: NaN as f32/bf16/f16, -1 as int32. */
template <typename T> T* poisoned(size_t n) {
  T* d = nullptr;
  CK(cudaMalloc(&d, std::max<size_t>(1, n) * sizeof(T)));
  CK(cudaMemset(d, 0xff, n * sizeof(T)));
  return d;
}
template <typename T> std::vector<T> download(const T* d, size_t n) {
  std::vector<T> h(n);
  CK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}

// ---- activations written by a kernel just before the one checked ----
/**
 * In a forward pass a kernel's activations (its input rows, the residual it adds to, the KV cache,
 * the position, the routing) are written by the kernel before it, and a kernel launched with PDL
 * (the decode GEMVs; under MC_CUDA_PDL=all also the attention, its combine and the MoE routing) may
 * run while that one still does, up to its griddepcontrol.wait. So here too: a Staging buffer is
 * NaN (-1 as int32) until Staging::around(launch) has launched stage_kernel and then the checked
 * kernel. stage_kernel lets its dependents launch at once (griddepcontrol.launch_dependents) and,
 * on a GPU, holds its copies until the host has launched the checked kernel (a flag in mapped host
 * memory) and ~20 µs more: a kernel that touched its inputs before its wait reads poison (the
 * PDL overlap line of the output says whether a PDL launch did start early on this GPU; main() loads
 * every kernel eagerly, since a lazily loaded kernel's first launch may wait for the context). On the
 * emulator, which runs kernels one after another, its PDL check fails such a kernel instead
 * (test/cuda/emu/mc_emu.hpp).
 */
struct StageList {
  const char* src[8];
  char* dst[8];
  int64_t bytes[8];
  int n = 0;
};
#if defined(__CUDA_ARCH__)
__device__ __forceinline__ uint64_t global_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
#endif
__global__ void stage_kernel(const StageList list, const volatile int* launched) {
  mc::let_next_kernel_launch();  // the checked kernel may launch now, and run up to its wait
#if defined(__CUDA_ARCH__)
  if (threadIdx.x == 0 && launched != nullptr) {
    const uint64_t start = global_ns();
    while (*launched == 0 && global_ns() - start < 50000000) {}  // the host's launch of the checked kernel (at most 50 ms)
    const uint64_t go = global_ns();
    while (global_ns() - go < 20000) {}  // ~20 µs for it to start and run up to its wait
  }
  __syncthreads();
#endif
  // 16 bytes a step (both buffers come from cudaMalloc: 16-byte aligned at least, also on the
  // emulator, whose allocations end at a guard page), the last few one by one:
  // a copy a byte at a time was ~9% of an emulated run (the KV caches of the long-context checks).
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, stride = int64_t(gridDim.x) * blockDim.x;
  for (int c = 0; c < list.n; ++c) {
    const int64_t vectors = list.bytes[c] / 16;
    for (int64_t i = first; i < vectors; i += stride) reinterpret_cast<uint4*>(list.dst[c])[i] = reinterpret_cast<const uint4*>(list.src[c])[i];
    for (int64_t i = vectors * 16 + first; i < list.bytes[c]; i += stride) list.dst[c][i] = list.src[c][i];
  }
}
/** Mapped host memory: 1 once the host has launched the checked kernel (a GPU only; nullptr on the emulator). */
volatile int* g_launched_host = nullptr;
int* g_launched_device = nullptr;
void init_staging() {
#if !defined(__CUDACC_EMULATED__)
  int* host = nullptr;
  CK(cudaHostAlloc(reinterpret_cast<void**>(&host), sizeof(int), cudaHostAllocMapped));
  CK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&g_launched_device), host, 0));
  g_launched_host = host;
#endif
}
struct Staging {
  StageList list;
  std::vector<void*> sources;
  Staging() = default;
  Staging(const Staging&) = delete;
  /** A device buffer that will hold h: poison until around() has run. */
  template <typename T> T* operator()(const std::vector<T>& h) {
    if (list.n == 8) {
      std::printf("kernels.cu: more than 8 staged buffers in one check\n");
      std::exit(2);
    }
    T* src = upload(h);
    T* dst = poisoned<T>(h.size());
    list.src[list.n] = reinterpret_cast<const char*>(src), list.dst[list.n] = reinterpret_cast<char*>(dst), list.bytes[list.n] = int64_t(h.size() * sizeof(T));
    ++list.n;
    sources.push_back(src);
    return dst;
  }
  /** stage_kernel, then launch() (the checked kernel's launch, nothing else), then the copies may go. */
  template <typename F> cudaError_t around(F launch) {
    if (g_launched_host != nullptr) *g_launched_host = 0;
    stage_kernel<<<8, 256>>>(list, g_launched_device);
    CK(cudaGetLastError());
    const cudaError_t e = launch();
    if (g_launched_host != nullptr) *g_launched_host = 1;
    return e;
  }
  ~Staging() {  // after the check's synchronization
    for (void* p : sources) cudaFree(p);
  }
};

// ---- comparison ----
int g_failures = 0, g_checks = 0;
/** Printed after what is checked: how the checks now running differ from the default path (else ""). */
const char* g_variant = "";
/** Runs `checks` with one device_info() setting changed to `value`, their lines marked with `label`. */
template <typename T, class Checks>
void with_setting(T& setting, T value, const char* label, Checks checks) {
  const T saved = setting;
  setting = value, g_variant = label;
  checks();
  setting = saved, g_variant = "";
}
/** Relative L2 error; a non-finite value anywhere (an unwritten, poisoned element) is a failure. */
void expect_close(const char* kernel, int T, const char* what, const Vec& ref, const Vec& got, double tol) {
  double num = 0, den = 0;
  bool finite = got.size() == ref.size();
  for (size_t i = 0; i < ref.size() && finite; ++i) {
    if (!std::isfinite(got[i])) finite = false;
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  const double err = finite ? std::sqrt(num / (den > 0 ? den : 1)) : INFINITY;
  const bool ok = err <= tol;
  ++g_checks;
  if (!ok) ++g_failures;
  std::printf("%s  %-32s T=%-3d %-14s rel L2 %.2e (tolerance %.0e)%s\n", ok ? "ok  " : "FAIL", kernel, T, what, err, tol, g_variant);
}
void expect_equal(const char* kernel, int T, const char* what, const std::vector<int32_t>& ref, const std::vector<int32_t>& got) {
  const bool ok = ref == got;
  ++g_checks;
  if (!ok) ++g_failures;
  std::printf("%s  %-32s T=%-3d %-14s %s%s\n", ok ? "ok  " : "FAIL", kernel, T, what, ok ? "exact" : "differs", g_variant);
}
/**
 * The weights of "the next GEMV", which a decode GEMV prefetches into L2 as its warps finish: a
 * buffer of their own, of a random size (a multiple of 16 bytes, from one share per warp of the
 * grid to several). A hint changes no output, and a GPU takes or drops it unseen, so on a GPU only
 * the launch with it is checked; the emulator logs every prefetch, and there the GEMV must have
 * hinted the whole range, each byte once, in 16-byte-aligned pieces (prefill GEMMs: nothing).
 */
struct NextWeights {
  char* d = nullptr;
  int64_t bytes = 16 * (1 + int64_t((uniform(g_stream++, 0) + 1) * 20000));
  NextWeights() { CK(cudaMalloc(&d, size_t(bytes))); }
  ~NextWeights() { cudaFree(d); }
  mc::L2Next l2() const {
    mc::L2Next next;
    next.p = d;
    next.bytes = bytes;
#if defined(MC_EMU_LOGS_PREFETCHES)
    mc_emu::take_prefetches();  // what earlier launches hinted
#endif
    return next;
  }
  void expect_prefetched(const char* kernel, int T, bool gemv) const {
#if defined(MC_EMU_LOGS_PREFETCHES)
    auto log = mc_emu::take_prefetches();
    std::sort(log.begin(), log.end());
    int64_t at = 0;
    bool ok = true;
    for (const auto& [p, n] : log) {
      ok = ok && p == d + at && n > 0;
      at += int64_t(n);
    }
    ok = ok && at == (gemv ? bytes : 0);
    ++g_checks;
    if (!ok) ++g_failures;
    std::printf("%s  %-32s T=%-3d %-14s %lld of %lld bytes in %zu pieces%s\n", ok ? "ok  " : "FAIL", kernel, T, "L2 prefetch", (long long)at,
                (long long)(gemv ? bytes : 0), log.size(), ok ? "" : " (not the whole range once, in order)");
#else
    (void)kernel, (void)T, (void)gemv;
#endif
  }
};
/** Whether a launch of T tokens takes the decode GEMV (which prefetches) rather than a prefill GEMM. */
bool decode_gemv(int T) { return T == 1 || !mc::kTensorCores<W>; }

/** Tolerance for outputs that went through W (bf16/f16 rounding of an operand or of the result). */
constexpr double kTolW = std::is_same<W, float>::value ? 1e-5 : 1e-2;
/** Tolerance for outputs computed in f32 from W-exact inputs (decode GEMV, attention, norms). */
constexpr double kTolF32 = 1e-5;

// ---- float64 pieces ----
Vec rmsnorm(const double* x, const Vec& w, int n, double eps) {
  double ss = 0;
  for (int i = 0; i < n; ++i) ss += x[i] * x[i];
  const double s = 1.0 / std::sqrt(ss / n + eps);
  Vec y(n);
  for (int i = 0; i < n; ++i) y[i] = x[i] * s * w[i];
  return y;
}
inline double hv(double x) { return x; }
template <typename T> double hv(T x) { return hf(x); }
/** matmul's register tile: kTileRows weight rows (widened) by kTileTokens tokens, as many independent sums. */
constexpr int kTileRows = 4, kTileTokens = 4;
/** acc[i][j] += Σ_k w[i * K + k] · x[k * kTileTokens + j] for i < kTileRows, j < J, k ascending. */
template <int J>
void dot_tile(const double* w, int K, const double* x, double (&acc)[kTileRows][J]) {
  for (int k = 0; k < K; ++k, x += kTileTokens)
    for (int i = 0; i < kTileRows; ++i) {
      const double wk = w[int64_t(i) * K + k];
#pragma omp simd
      for (int j = 0; j < J; ++j) acc[i][j] += wk * x[j];
    }
}
/**
 * Y[t * rows + r] = Σ_k m[(row0 + r) * K + k] X[t * K + k] for the T tokens t (X: T rows of K) and
 * r < rows, m read as stored (no widened copy of big weights). Every weight row is read and widened
 * once for all T tokens: one matrix-vector product per token read the whole matrix T times (Mistral
 * Large 2's w1|w3, 1.4 GB in bf16, made ~1 TB of memory traffic at 700 tokens, and the GPU check ran
 * past its 10 minutes). Each Y is the same sum as that product's (the same terms, added in k order):
 * the tiles only interleave kTileRows x kTileTokens independent sums, so that they vectorize.
 */
template <typename S>
Vec matmul(const std::vector<S>& m, const double* X, int T, int64_t row0, int rows, int K) {
  if (T == 0) return {};
  const int blocks = (T + kTileTokens - 1) / kTileTokens;
  Vec xb(size_t(blocks) * K * kTileTokens, 0.0);  // X in blocks of kTileTokens tokens, token-minor
#pragma omp parallel for schedule(static)
  for (int t = 0; t < T; ++t)
    for (int k = 0; k < K; ++k) xb[(int64_t(t / kTileTokens) * K + k) * kTileTokens + t % kTileTokens] = X[int64_t(t) * K + k];
  Vec y(size_t(T) * rows);
#pragma omp parallel
  {
    Vec w(size_t(kTileRows) * K);  // this thread's weight rows, widened
#pragma omp for schedule(dynamic, 1)
    for (int r0 = 0; r0 < rows; r0 += kTileRows) {
      const int nr = std::min(kTileRows, rows - r0);
      for (int i = 0; i < kTileRows; ++i) {  // past the last row: its copy, whose sums are dropped
        const S* row = m.data() + (row0 + r0 + std::min(i, nr - 1)) * K;
        for (int k = 0; k < K; ++k) w[int64_t(i) * K + k] = hv(row[k]);
      }
      for (int b = 0; b < blocks; ++b) {
        const double* x = xb.data() + int64_t(b) * K * kTileTokens;
        const int t0 = b * kTileTokens, nt = std::min(kTileTokens, T - t0);
        if (nt == kTileTokens) {
          double acc[kTileRows][kTileTokens] = {};
          dot_tile(w.data(), K, x, acc);
          for (int i = 0; i < nr; ++i)
            for (int j = 0; j < kTileTokens; ++j) y[int64_t(t0 + j) * rows + r0 + i] = acc[i][j];
        } else {
          for (int j = 0; j < nt; ++j) {  // the last, partial block: one token at a time
            double acc[kTileRows][1] = {};
            dot_tile(w.data(), K, x + j, acc);
            for (int i = 0; i < nr; ++i) y[int64_t(t0 + j) * rows + r0 + i] = acc[i][0];
          }
        }
      }
    }
  }
  return y;
}
/** rmsnorm of the T rows x[first], x[first + 1], ... (n wide), stacked: matmul's X. */
Vec rmsnorm_rows(const Vec& x, int first, int T, const Vec& w, int n, double eps) {
  Vec out(size_t(T) * n);
  for (int t = 0; t < T; ++t) {
    const Vec y = rmsnorm(x.data() + int64_t(first + t) * n, w, n, eps);
    std::copy(y.begin(), y.end(), out.begin() + int64_t(t) * n);
  }
  return out;
}
double silu(double x) { return x / (1 + std::exp(-x)); }

template <int KV_SLOTS>
void check_qkv(int T) {
  namespace K = rmsnorm_qkv_rope_cache;
  const int32_t pos0 = int32_t((uniform(g_stream++, 0) + 1) * 500);
  auto residual = rand_vec<float>(size_t(T) * K::DIM, 1.0);
  auto norm = rand_vec<W>(K::DIM, 0.2, 1.0);
  auto wqkv = rand_vec<W>(size_t(K::QKV) * K::DIM, 1.0 / std::sqrt(double(K::DIM)));
  std::vector<double> inv_freq(K::HEAD_DIM / 2);
  mc::rope_inv_freq(10000.0, K::HEAD_DIM, inv_freq.data());
  Staging in;
  float* d_res = in(residual);
  W* d_norm = upload(norm);
  W* d_w = upload(wqkv);
  double* d_inv = upload(inv_freq);
  int32_t* d_pos = in(std::vector<int32_t>{pos0});
  float* d_rstd = poisoned<float>(T);
  float* d_q = poisoned<float>(size_t(T) * K::Q_DIM);
  KV* d_k = poisoned<KV>(size_t(KV_SLOTS) * K::KV_DIM);
  KV* d_v = poisoned<KV>(size_t(KV_SLOTS) * K::KV_DIM);
  CK(K::prepare<KV_SLOTS>());
  uint16_t* d_a16 = poisoned<uint16_t>(size_t(T) * K::DIM);  // A narrowed once (every prefill GEMM, by default): every element written before it is read
  const NextWeights next;
  CK(in.around([&] { return K::launch<KV_SLOTS>(d_res, T, d_pos, d_norm, d_w, d_inv, d_rstd, d_a16, d_q, d_k, d_v, next.l2(), 0); }));
  CK(cudaDeviceSynchronize());
  next.expect_prefetched("rmsnorm_qkv_rope_cache", T, decode_gemv(T));
  CK(cudaDeviceSynchronize());
  const Vec res = widen(residual), nw = widen(norm);
  Vec qkv = matmul(wqkv, rmsnorm_rows(res, 0, T, nw, K::DIM, K::EPS).data(), T, 0, K::QKV, K::DIM);
  Vec q_ref, k_ref, v_ref;
  for (int t = 0; t < T; ++t) {
    double* y = qkv.data() + int64_t(t) * K::QKV;
    for (int n = 0; n < K::Q_DIM + K::KV_DIM; n += 2) {
      const double a = double(pos0 + t) * inv_freq[(n % K::HEAD_DIM) / 2], c = std::cos(a), s = std::sin(a);
      const double x0 = y[n], x1 = y[n + 1];
      y[n] = x0 * c - x1 * s, y[n + 1] = x0 * s + x1 * c;
    }
    q_ref.insert(q_ref.end(), y, y + K::Q_DIM);
    k_ref.insert(k_ref.end(), y + K::Q_DIM, y + K::Q_DIM + K::KV_DIM);
    v_ref.insert(v_ref.end(), y + K::Q_DIM + K::KV_DIM, y + K::QKV);
  }
  const Vec q_got = widen(download(d_q, size_t(T) * K::Q_DIM));
  const auto k_all = download(d_k, size_t(KV_SLOTS) * K::KV_DIM), v_all = download(d_v, size_t(KV_SLOTS) * K::KV_DIM);
  Vec k_got, v_got;
  for (int t = 0; t < T; ++t) {
    const int64_t slot = (pos0 + t) % KV_SLOTS;
    for (int i = 0; i < K::KV_DIM; ++i) k_got.push_back(hf(k_all[slot * K::KV_DIM + i])), v_got.push_back(hf(v_all[slot * K::KV_DIM + i]));
  }
  const double tol_q = T > 1 ? kTolW : kTolF32;
  expect_close("rmsnorm_qkv_rope_cache", T, "q", q_ref, q_got, tol_q);
  expect_close("rmsnorm_qkv_rope_cache", T, "k cache slots", k_ref, k_got, kTolW);
  expect_close("rmsnorm_qkv_rope_cache", T, "v cache slots", v_ref, v_got, kTolW);
  cudaFree(d_res), cudaFree(d_norm), cudaFree(d_w), cudaFree(d_inv), cudaFree(d_pos), cudaFree(d_rstd), cudaFree(d_a16), cudaFree(d_q), cudaFree(d_k), cudaFree(d_v);
}

template <int WINDOW, int KV_SLOTS>
void check_attention(int T, int32_t pos0) {
  namespace A = attention_gqa_window;
  constexpr int KV_DIM = A::N_KV_HEADS * A::HEAD_DIM, Q_DIM = A::N_HEADS * A::HEAD_DIM;
  auto q = rand_vec<float>(size_t(T) * Q_DIM, 1.0);
  auto kc = rand_vec<KV>(size_t(KV_SLOTS) * KV_DIM, 1.0);
  auto vc = rand_vec<KV>(size_t(KV_SLOTS) * KV_DIM, 1.0);
  Staging in;
  float* d_q = in(q);
  KV* d_k = in(kc);
  KV* d_v = in(vc);
  int32_t* d_pos = in(std::vector<int32_t>{pos0});
  float* d_part = poisoned<float>(A::PARTIAL_FLOATS);
  float* d_out = poisoned<float>(size_t(T) * Q_DIM);
  CK(A::prepare<WINDOW, KV_SLOTS>());
  CK(in.around([&] { return A::launch<WINDOW, KV_SLOTS>(d_q, T, d_pos, d_k, d_v, d_part, d_out, 0); }));
  CK(cudaDeviceSynchronize());
  const Vec kd = widen(kc), vd = widen(vc);
  Vec ref(size_t(T) * Q_DIM);
#pragma omp parallel for schedule(dynamic)
  for (int t = 0; t < T; ++t) {
    const int p = pos0 + t, lo = WINDOW > 0 ? std::max(0, p - WINDOW + 1) : 0;
    const int n = p - lo + 1;
    // A KV head at a time, each key and value row read once for the GROUP query heads that share it:
    // head by head, rereading every row from memory, this reference was ~17% of an emulated run.
    for (int g = 0; g < A::N_KV_HEADS; ++g) {
      const int h0 = g * A::GROUP;
      Vec qd(q.begin() + int64_t(t) * Q_DIM + h0 * A::HEAD_DIM, q.begin() + int64_t(t) * Q_DIM + (h0 + A::GROUP) * A::HEAD_DIM);
      Vec s(size_t(A::GROUP) * n);  // s[j * n + (kp - lo)]: query head h0 + j
      Vec mx(A::GROUP, -INFINITY), sum(A::GROUP, 0.0);
      for (int kp = lo; kp <= p; ++kp) {
        const double* key = kd.data() + int64_t(kp % KV_SLOTS) * KV_DIM + g * A::HEAD_DIM;
        for (int j = 0; j < A::GROUP; ++j) {
          double d = 0;
          for (int i = 0; i < A::HEAD_DIM; ++i) d += qd[j * A::HEAD_DIM + i] * key[i];
          const double x = d / std::sqrt(double(A::HEAD_DIM));
          s[size_t(j) * n + (kp - lo)] = x;
          mx[j] = std::max(mx[j], x);
        }
      }
      for (int j = 0; j < A::GROUP; ++j)
        for (int k = 0; k < n; ++k) sum[j] += (s[size_t(j) * n + k] = std::exp(s[size_t(j) * n + k] - mx[j]));
      Vec o(size_t(A::GROUP) * A::HEAD_DIM, 0.0);  // each o[i] summed over kp ascending, reading the values row by row
      for (int kp = lo; kp <= p; ++kp) {
        const double* value = vd.data() + int64_t(kp % KV_SLOTS) * KV_DIM + g * A::HEAD_DIM;
        for (int j = 0; j < A::GROUP; ++j)
          for (int i = 0; i < A::HEAD_DIM; ++i) o[size_t(j) * A::HEAD_DIM + i] += s[size_t(j) * n + (kp - lo)] * value[i];
      }
      for (int j = 0; j < A::GROUP; ++j)
        for (int i = 0; i < A::HEAD_DIM; ++i) ref[int64_t(t) * Q_DIM + (h0 + j) * A::HEAD_DIM + i] = o[size_t(j) * A::HEAD_DIM + i] / sum[j];
    }
  }
  char what[64];
  std::snprintf(what, sizeof what, "w%d/%d@%d", WINDOW, KV_SLOTS, pos0);
  // Tensor-core prefill rounds q and the probabilities to KV's 16-bit type; everything else is f32 math.
  expect_close("attention_gqa_window", T, what, ref, widen(download(d_out, size_t(T) * Q_DIM)), T > 1 && A::FLASH ? kTolW : kTolF32 * 10);
  cudaFree(d_q), cudaFree(d_k), cudaFree(d_v), cudaFree(d_pos), cudaFree(d_part), cudaFree(d_out);
}

/** Two device buffers hold the same bits (as int32 words, for expect_equal). */
template <typename T> std::vector<int32_t> bits(const T* d, size_t n) {
  const auto h = download(d, n);
  std::vector<int32_t> words((h.size() * sizeof(T) + 3) / 4, 0);
  std::memcpy(words.data(), h.data(), h.size() * sizeof(T));
  return words;
}

/**
 * MC_CUDA_ATTN_CLUSTER: the one-kernel decode attention (a cluster of blocks a KV head, merged
 * through distributed shared memory) against the split kernel and its combine (the default's splits)
 * on the same inputs, bit for bit where every split of both has one tile at most: both then merge
 * the same partials in the same order, the split kernel's extra splits empty (check_attention under
 * the setting compares it with the float64 reference everywhere).
 */
template <int WINDOW, int KV_SLOTS>
void check_attention_cluster_bits(int32_t pos0) {
  namespace A = attention_gqa_window;
  constexpr int KV_DIM = A::N_KV_HEADS * A::HEAD_DIM, Q_DIM = A::N_HEADS * A::HEAD_DIM;
  constexpr int ONE_TILE = 32 * std::min(A::default_splits<WINDOW, KV_SLOTS>(), A::cluster_splits<WINDOW, KV_SLOTS>());
  const int visible = std::min(pos0 + 1, A::visible_max<WINDOW, KV_SLOTS>());
  if (visible > ONE_TILE) {  // a call site's mistake: the two need not agree bit for bit there
    ++g_checks, ++g_failures;
    std::printf("FAIL  %-32s T=1   %d visible positions pass one tile a split (%d): not a case for a bit-for-bit check\n", "attention_gqa_window", visible, ONE_TILE);
    return;
  }
  float* d_q = upload(rand_vec<float>(Q_DIM, 1.0));
  KV* d_k = upload(rand_vec<KV>(size_t(KV_SLOTS) * KV_DIM, 1.0));
  KV* d_v = upload(rand_vec<KV>(size_t(KV_SLOTS) * KV_DIM, 1.0));
  int32_t* d_pos = upload(std::vector<int32_t>{pos0});
  float* d_part = poisoned<float>(A::PARTIAL_FLOATS);
  float* d_split = poisoned<float>(Q_DIM);
  float* d_cluster = poisoned<float>(Q_DIM);
  // The split kernels (the setting off), then the cluster kernel (on at every position).
  for (const std::pair<int, float*>& run : {std::pair<int, float*>{0, d_split}, std::pair<int, float*>{mc::kMaxClusterPositions, d_cluster}}) {
    float* out = run.second;
    with_setting(mc::device_info().attn_cluster_positions, run.first, g_variant, [&] {
      CK(A::prepare<WINDOW, KV_SLOTS>());
      CK(A::launch<WINDOW, KV_SLOTS>(d_q, 1, d_pos, d_k, d_v, d_part, out, 0));
    });
  }
  CK(cudaDeviceSynchronize());
  char what[64];
  std::snprintf(what, sizeof what, "cluster w%d/%d@%d", WINDOW, KV_SLOTS, pos0);
  expect_equal("attention_gqa_window", 1, what, bits(d_split, Q_DIM), bits(d_cluster, Q_DIM));
  cudaFree(d_q), cudaFree(d_k), cudaFree(d_v), cudaFree(d_pos), cudaFree(d_part), cudaFree(d_split), cudaFree(d_cluster);
}

void check_embedding(int T) {
  namespace E = embedding_lookup;
  std::vector<int32_t> tokens(T);
  for (int t = 0; t < T; ++t) tokens[t] = int32_t((uniform(g_stream, t) + 1) * 0.5 * E::VOCAB_LOCAL);
  ++g_stream;
  auto emb = rand_vec<W>(size_t(E::VOCAB_LOCAL) * E::DIM, 1.0);
  Staging in;
  int32_t* d_tok = in(tokens);
  W* d_emb = upload(emb);
  float* d_out = poisoned<float>(size_t(T) * E::DIM);
  CK(in.around([&] { return E::launch(d_tok, T, 0, d_emb, d_out, 0); }));
  CK(cudaDeviceSynchronize());
  Vec ref;
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < E::DIM; ++i) ref.push_back(hf(emb[int64_t(tokens[t]) * E::DIM + i]));
  expect_close("embedding_lookup", T, "residual", ref, widen(download(d_out, size_t(T) * E::DIM)), 0.0);
  cudaFree(d_tok), cudaFree(d_emb), cudaFree(d_out);
}

/** residual += x · wᵀ kernels (wo_residual, w2_residual): launch(x, T, w, residual, a16 scratch, next weights, stream). */
template <int DIM, int IN, typename Launch>
void check_residual_projection(const char* name, int T, Launch launch) {
  auto x = rand_vec<float>(size_t(T) * IN, 1.0);
  auto w = rand_vec<W>(size_t(DIM) * IN, 1.0 / std::sqrt(double(IN)));
  auto residual = rand_vec<float>(size_t(T) * DIM, 1.0);
  Staging in;
  float* d_x = in(x);
  W* d_w = upload(w);
  float* d_r = in(residual);
  uint16_t* d_a16 = poisoned<uint16_t>(size_t(T) * IN);
  const NextWeights next;
  CK(in.around([&] { return launch(d_x, T, d_w, d_r, d_a16, next.l2(), cudaStream_t(0)); }));
  CK(cudaDeviceSynchronize());
  next.expect_prefetched(name, T, decode_gemv(T));
  Vec ref = matmul(w, widen(x).data(), T, 0, DIM, IN);
  for (size_t i = 0; i < ref.size(); ++i) ref[i] = residual[i] + ref[i];
  expect_close(name, T, "residual", ref, widen(download(d_r, size_t(T) * DIM)), T > 1 ? kTolW : kTolF32);
  cudaFree(d_x), cudaFree(d_w), cudaFree(d_r), cudaFree(d_a16);
}

void check_output(int rows) {
  namespace O = rmsnorm_output;
  const int first = 3;
  auto residual = rand_vec<float>(size_t(first + rows) * O::DIM, 1.0);
  auto norm = rand_vec<W>(O::DIM, 0.2, 1.0);
  auto out = rand_vec<W>(size_t(O::VOCAB_LOCAL) * O::DIM, 1.0 / std::sqrt(double(O::DIM)));
  Staging in;
  float* d_res = in(residual);
  W* d_norm = upload(norm);
  W* d_out = upload(out);
  float* d_rstd = poisoned<float>(rows);
  float* d_logits = poisoned<float>(size_t(rows) * O::VOCAB_LOCAL);
  CK(O::prepare());
  uint16_t* d_a16 = poisoned<uint16_t>(size_t(rows) * O::DIM);
  const NextWeights next;
  CK(in.around([&] { return O::launch(d_res, first, rows, d_norm, d_out, d_rstd, d_a16, d_logits, next.l2(), 0); }));
  CK(cudaDeviceSynchronize());
  next.expect_prefetched("rmsnorm_output", rows, decode_gemv(rows));
  const Vec res = widen(residual), nw = widen(norm);
  const Vec ref = matmul(out, rmsnorm_rows(res, first, rows, nw, O::DIM, O::EPS).data(), rows, 0, O::VOCAB_LOCAL, O::DIM);
  expect_close("rmsnorm_output", rows, "logits", ref, widen(download(d_logits, size_t(rows) * O::VOCAB_LOCAL)), rows > 1 ? kTolW : kTolF32);
  cudaFree(d_res), cudaFree(d_norm), cudaFree(d_out), cudaFree(d_rstd), cudaFree(d_a16), cudaFree(d_logits);
}

#if MC_DENSE
void check_w13(int T) {
  namespace F = rmsnorm_w13_swiglu;
  auto residual = rand_vec<float>(size_t(T) * F::DIM, 1.0);
  auto norm = rand_vec<W>(F::DIM, 0.2, 1.0);
  auto w13 = rand_vec<W>(size_t(2) * F::HIDDEN * F::DIM, 1.0 / std::sqrt(double(F::DIM)));
  Staging in;
  float* d_res = in(residual);
  W* d_norm = upload(norm);
  W* d_w = upload(w13);
  float* d_rstd = poisoned<float>(T);
  float* d_h = poisoned<float>(size_t(T) * F::HIDDEN);
  CK(F::prepare());
  uint16_t* d_a16 = poisoned<uint16_t>(size_t(T) * F::DIM);
  const NextWeights next;
  CK(in.around([&] { return F::launch(d_res, T, d_norm, d_w, d_rstd, d_a16, d_h, next.l2(), 0); }));
  CK(cudaDeviceSynchronize());
  next.expect_prefetched("rmsnorm_w13_swiglu", T, decode_gemv(T));
  const Vec res = widen(residual), nw = widen(norm);
  const Vec ab = matmul(w13, rmsnorm_rows(res, 0, T, nw, F::DIM, F::EPS).data(), T, 0, 2 * F::HIDDEN, F::DIM);  // w1 x | w3 x per token
  Vec ref;
  for (int t = 0; t < T; ++t) {
    const double *a = ab.data() + int64_t(t) * 2 * F::HIDDEN, *b = a + F::HIDDEN;
    for (int u = 0; u < F::HIDDEN; ++u) ref.push_back(silu(a[u]) * b[u]);
  }
  expect_close("rmsnorm_w13_swiglu", T, "hidden", ref, widen(download(d_h, size_t(T) * F::HIDDEN)), T > 1 ? kTolW : kTolF32);
  cudaFree(d_res), cudaFree(d_norm), cudaFree(d_w), cudaFree(d_rstd), cudaFree(d_a16), cudaFree(d_h);
}

/**
 * A decode chain (mc::gemv_chain) gives the same bits as its links launched one after another as
 * kernels (each checked against float64 above). MC_CUDA_DECODE=chain: wo, w1|w3 and w2, and with
 * `with_next` the next layer's wq|wk|wv, which overwrites q (as in the model) and writes its KV ring.
 * MC_CUDA_DECODE=layer (ATTENTION): the decode attention and its combine in front, over a ring of
 * KV_SLOTS slots with WINDOW, pos0 drawn so that the splits hold several tiles and, with a window,
 * the ring has wrapped; compared with the attention's two kernels in the chain's splits (check_attention
 * checks those: about 256 blocks, which launch() takes under MC_CUDA_ATTN_BLOCKS=256).
 * max_blocks: a smaller grid than prepare sizes (as on a GPU with fewer SMs), so that blocks take
 * several attention items and combine heads in turn, refilling the ring between items.
 */
template <bool ATTENTION, int WINDOW = 0, int KV_SLOTS = 1024>
void check_decode_chain(bool with_next, int max_blocks = 0) {
  namespace A = attention_gqa_window;
  if constexpr (ATTENTION && A::GROUP > 8) {
    return;  // no layer chain for this model (compiler/emit/render-cuda.ts): a chain's block has 8 warps
  } else {
    namespace O = wo_residual;
    namespace F = rmsnorm_w13_swiglu;
    namespace D = w2_residual;
    namespace Q = rmsnorm_qkv_rope_cache;
    constexpr int NEXT_SLOTS = 1024;
    // The layer chain, full attention: a position in the second half of the cache; a window: after
    // the ring wrapped once or twice. The GEMVs alone: a position of the next layer's ring.
    const int lo = !ATTENTION ? 0 : WINDOW > 0 ? KV_SLOTS : KV_SLOTS / 2, hi = !ATTENTION ? NEXT_SLOTS : WINDOW > 0 ? 3 * KV_SLOTS : KV_SLOTS;
    const int32_t pos0 = lo + int32_t((uniform(g_stream++, 0) + 1) * 0.5 * (hi - lo - 1));
    const auto q = rand_vec<float>(A::N_HEADS * A::HEAD_DIM, 1.0), attn_out = rand_vec<float>(O::IN, 1.0), residual = rand_vec<float>(O::DIM, 1.0);
    const auto kc = rand_vec<KV>(ATTENTION ? size_t(KV_SLOTS) * Q::KV_DIM : 0, 1.0), vc = rand_vec<KV>(ATTENTION ? size_t(KV_SLOTS) * Q::KV_DIM : 0, 1.0);
    const auto wo = rand_vec<W>(size_t(O::DIM) * O::IN, 1.0 / std::sqrt(double(O::IN)));
    const auto ffn_norm = rand_vec<W>(F::DIM, 0.2, 1.0), attention_norm = rand_vec<W>(Q::DIM, 0.2, 1.0);
    const auto w13 = rand_vec<W>(size_t(2) * F::HIDDEN * F::DIM, 1.0 / std::sqrt(double(F::DIM)));
    const auto w2 = rand_vec<W>(size_t(D::DIM) * D::HIDDEN, 1.0 / std::sqrt(double(D::HIDDEN)));
    const auto wqkv = rand_vec<W>(size_t(Q::QKV) * Q::DIM, 1.0 / std::sqrt(double(Q::DIM)));
    std::vector<double> inv_freq(Q::HEAD_DIM / 2);
    mc::rope_inv_freq(10000.0, Q::HEAD_DIM, inv_freq.data());
    W *d_wo = upload(wo), *d_fn = upload(ffn_norm), *d_an = upload(attention_norm), *d_w13 = upload(w13), *d_w2 = upload(w2), *d_wqkv = upload(wqkv);
    KV *d_k = ATTENTION ? upload(kc) : nullptr, *d_v = ATTENTION ? upload(vc) : nullptr;
    double* d_inv = upload(inv_freq);
    int32_t* d_pos = upload(std::vector<int32_t>{pos0});
    unsigned* d_arrivals = upload(std::vector<unsigned>{0u});
    // Each path's own buffers: q (the attention's input, then the next wq|wk|wv's output), the
    // attention's partials and output (wo's input), the residual it adds to, the hidden state, the
    // next layer's KV ring; poisoned where the path writes them first.
    struct Out {
      float *q, *partial, *attn, *residual, *hidden;
      KV *k, *v;
    } path[2];
    for (Out& o : path) {
      o.q = ATTENTION ? upload(q) : poisoned<float>(Q::Q_DIM), o.partial = poisoned<float>(A::PARTIAL_FLOATS);
      o.attn = ATTENTION ? poisoned<float>(O::IN) : upload(attn_out), o.residual = upload(residual), o.hidden = poisoned<float>(F::HIDDEN);
      o.k = poisoned<KV>(size_t(NEXT_SLOTS) * Q::KV_DIM), o.v = poisoned<KV>(size_t(NEXT_SLOTS) * Q::KV_DIM);
    }
    float* d_rstd = poisoned<float>(1);
    uint16_t* d_a16 = poisoned<uint16_t>(size_t(F::HIDDEN) + Q::DIM);
    CK(Q::prepare<NEXT_SLOTS>());
    const Out& k = path[0];
    if constexpr (ATTENTION) {
      CK(A::prepare<WINDOW, KV_SLOTS>());
      CK(A::launch_decode<A::chain_splits<WINDOW, KV_SLOTS>(), WINDOW, KV_SLOTS>(k.q, d_pos, d_k, d_v, k.partial, k.attn, 0));
    }
    CK(O::launch(k.attn, 1, d_wo, k.residual, d_a16, {}, 0));
    CK(F::launch(k.residual, 1, d_fn, d_w13, d_rstd, d_a16, k.hidden, {}, 0));
    CK(D::launch(k.hidden, 1, d_w2, k.residual, d_a16, {}, 0));
    if (with_next) CK(Q::launch<NEXT_SLOTS>(k.residual, 1, d_pos, d_an, d_wqkv, d_inv, d_rstd, d_a16, k.q, k.k, k.v, {}, 0));
    const Out& c = path[1];
    // The chain of these links, prepared, launched on at most max_blocks blocks.
    auto chain = [&](const auto&... links) {
      CK(mc::gemv_chain_prepare<std::decay_t<decltype(links)>...>());
      int& blocks = mc::gemv_chain_blocks<std::decay_t<decltype(links)>...>();
      const int prepared = blocks;
      if (max_blocks > 0) blocks = std::min(max_blocks, prepared);
      CK(mc::gemv_chain(d_arrivals, 0, links...));
      blocks = prepared;
    };
    const auto o = O::decode(c.attn, d_wo, c.residual);
    const auto f = F::decode(c.residual, d_fn, d_w13, c.hidden);
    const auto d = D::decode(c.hidden, d_w2, c.residual);
    const auto n = Q::decode<NEXT_SLOTS>(c.residual, d_pos, d_an, d_wqkv, d_inv, c.q, c.k, c.v);
    if constexpr (ATTENTION) {
      const auto a = A::decode<WINDOW, KV_SLOTS>(c.q, d_pos, d_k, d_v, c.partial);
      const auto b = A::combine<WINDOW, KV_SLOTS>(c.partial, c.attn);
      if (with_next) chain(a, b, o, f, d, n);
      else chain(a, b, o, f, d);
    } else {
      if (with_next) chain(o, f, d, n);
      else chain(o, f, d);
    }
    CK(cudaDeviceSynchronize());
    const char* name = ATTENTION ? (with_next ? "gemv_chain (attention..next wqkv)" : "gemv_chain (attention..w2)")
                                 : (with_next ? "gemv_chain (wo..next wqkv)" : "gemv_chain (wo, w13, w2)");
    if constexpr (ATTENTION) {
      char where[64];
      std::snprintf(where, sizeof where, "attention w%d/%d@%d%s", WINDOW, KV_SLOTS, pos0, max_blocks > 0 ? " small grid" : "");
      expect_equal(name, 1, where, bits(k.attn, O::IN), bits(c.attn, O::IN));
    }
    expect_equal(name, 1, "residual", bits(k.residual, O::DIM), bits(c.residual, O::DIM));
    expect_equal(name, 1, "hidden", bits(k.hidden, F::HIDDEN), bits(c.hidden, F::HIDDEN));
    if (with_next) {
      expect_equal(name, 1, "q", bits(k.q, Q::Q_DIM), bits(c.q, Q::Q_DIM));
      expect_equal(name, 1, "k cache", bits(k.k, size_t(NEXT_SLOTS) * Q::KV_DIM), bits(c.k, size_t(NEXT_SLOTS) * Q::KV_DIM));
      expect_equal(name, 1, "v cache", bits(k.v, size_t(NEXT_SLOTS) * Q::KV_DIM), bits(c.v, size_t(NEXT_SLOTS) * Q::KV_DIM));
    }
    for (Out& p : path) cudaFree(p.q), cudaFree(p.partial), cudaFree(p.attn), cudaFree(p.residual), cudaFree(p.hidden), cudaFree(p.k), cudaFree(p.v);
    cudaFree(d_wo), cudaFree(d_fn), cudaFree(d_an), cudaFree(d_w13), cudaFree(d_w2), cudaFree(d_wqkv), cudaFree(d_k), cudaFree(d_v), cudaFree(d_inv), cudaFree(d_pos);
    cudaFree(d_arrivals), cudaFree(d_rstd), cudaFree(d_a16);
  }
}
#else
/** Routing as Mistral does it, in double: top-k of the logits (ties to the lower index), softmax over k. */
void route(const Vec& logits, int E, int K, std::vector<int32_t>& ex, Vec& wt) {
  std::vector<bool> taken(E, false);
  for (int k = 0; k < K; ++k) {
    int best = -1;
    for (int e = 0; e < E; ++e)
      if (!taken[e] && (best < 0 || logits[e] > logits[best])) best = e;
    taken[best] = true;
    ex.push_back(best);
    wt.push_back(logits[best]);
  }
  const size_t base = wt.size() - K;
  double sum = 0;
  const double top = wt[base];
  for (int k = 0; k < K; ++k) sum += (wt[base + k] = std::exp(wt[base + k] - top));
  for (int k = 0; k < K; ++k) wt[base + k] /= sum;
}

/** The stable counting sort of T * K (token, slot) pairs by expert that the kernels expect: offsets, rows, pair_row. */
struct Grouping {
  std::vector<int32_t> offsets, rows, pair_row;
  Grouping(const std::vector<int32_t>& expert, int E) : offsets(E + 1, 0), rows(expert.size()), pair_row(expert.size()) {
    for (int32_t e : expert) ++offsets[e + 1];
    for (int e = 0; e < E; ++e) offsets[e + 1] += offsets[e];
    std::vector<int32_t> next(offsets.begin(), offsets.end() - 1);
    for (size_t i = 0; i < expert.size(); ++i) rows[next[expert[i]]] = int32_t(i), pair_row[i] = next[expert[i]]++;
  }
};

void check_gate(int T) {
  namespace G = rmsnorm_moe_gate_topk_softmax;
  auto residual = rand_vec<float>(size_t(T) * G::DIM, 1.0);
  auto norm = rand_vec<W>(G::DIM, 0.2, 1.0);
  auto gate = rand_vec<W>(size_t(G::EXPERTS) * G::DIM, 1.0 / std::sqrt(double(G::DIM)));
  Staging in;
  float* d_res = in(residual);
  W* d_norm = upload(norm);
  W* d_gate = upload(gate);
  float* d_normed = poisoned<float>(size_t(T) * G::DIM);
  int32_t* d_ex = poisoned<int32_t>(size_t(T) * G::TOP_K);
  float* d_wt = poisoned<float>(size_t(T) * G::TOP_K);
  // With one token the kernel also groups it (moe_group_by_expert's outputs); otherwise these stay poisoned.
  int32_t* d_off = poisoned<int32_t>(G::EXPERTS + 1);
  int32_t* d_rows = poisoned<int32_t>(size_t(T) * G::TOP_K);
  int32_t* d_pair = poisoned<int32_t>(size_t(T) * G::TOP_K);
  CK(G::prepare());
  CK(in.around([&] { return G::launch(d_res, T, d_norm, d_gate, d_normed, d_ex, d_wt, d_off, d_rows, d_pair, 0); }));
  CK(cudaDeviceSynchronize());
  const Vec res = widen(residual), nw = widen(norm);
  const Vec normed_ref = rmsnorm_rows(res, 0, T, nw, G::DIM, G::EPS);
  const Vec logits = matmul(gate, normed_ref.data(), T, 0, G::EXPERTS, G::DIM);
  Vec wt_ref;
  std::vector<int32_t> ex_ref;
  for (int t = 0; t < T; ++t)
    route(Vec(logits.begin() + int64_t(t) * G::EXPERTS, logits.begin() + int64_t(t + 1) * G::EXPERTS), G::EXPERTS, G::TOP_K, ex_ref, wt_ref);
  expect_close("rmsnorm_moe_gate_topk_softmax", T, "normed", normed_ref, widen(download(d_normed, size_t(T) * G::DIM)), kTolF32);
  expect_equal("rmsnorm_moe_gate_topk_softmax", T, "experts", ex_ref, download(d_ex, size_t(T) * G::TOP_K));
  expect_close("rmsnorm_moe_gate_topk_softmax", T, "weights", wt_ref, widen(download(d_wt, size_t(T) * G::TOP_K)), kTolF32 * 10);
  if (T > 1) {  // prefills leave the grouping to moe_group_by_expert: nothing written there
    const std::vector<int32_t> untouched_off(G::EXPERTS + 1, -1), untouched(size_t(T) * G::TOP_K, -1);
    expect_equal("rmsnorm_moe_gate_topk_softmax", T, "offsets untouched", untouched_off, download(d_off, G::EXPERTS + 1));
    expect_equal("rmsnorm_moe_gate_topk_softmax", T, "rows untouched", untouched, download(d_rows, size_t(T) * G::TOP_K));
    expect_equal("rmsnorm_moe_gate_topk_softmax", T, "pair_row untouched", untouched, download(d_pair, size_t(T) * G::TOP_K));
  } else {
    const Grouping g(ex_ref, G::EXPERTS);
    expect_equal("rmsnorm_moe_gate_topk_softmax", T, "offsets (grouping one token)", g.offsets, download(d_off, G::EXPERTS + 1));
    expect_equal("rmsnorm_moe_gate_topk_softmax", T, "rows (grouping one token)", g.rows, download(d_rows, size_t(T) * G::TOP_K));
    expect_equal("rmsnorm_moe_gate_topk_softmax", T, "pair_row (grouping one token)", g.pair_row, download(d_pair, size_t(T) * G::TOP_K));
  }
  cudaFree(d_res), cudaFree(d_norm), cudaFree(d_gate), cudaFree(d_normed), cudaFree(d_ex), cudaFree(d_wt);
  cudaFree(d_off), cudaFree(d_rows), cudaFree(d_pair);
}

/** The indices i < n of each expert (expert_of(i)), ascending: one matmul per expert reads its weights once. */
template <typename F>
std::vector<std::vector<int>> by_expert(int experts, int n, F expert_of) {
  std::vector<std::vector<int>> out(experts);
  for (int i = 0; i < n; ++i) out[expert_of(i)].push_back(i);
  return out;
}
/** The rows src[row_of(i)] (n wide) for the indices i, stacked: matmul's X. */
template <typename F>
Vec gather(const Vec& src, int n, const std::vector<int>& indices, F row_of) {
  Vec out(indices.size() * size_t(n));
  for (size_t i = 0; i < indices.size(); ++i) std::copy_n(src.begin() + int64_t(row_of(indices[i])) * n, n, out.begin() + int64_t(i) * n);
  return out;
}

/** Random distinct experts per token and the stable counting sort the kernels expect. */
struct Routing {
  std::vector<int32_t> expert, offsets, rows, pair_row;
  std::vector<float> weight;
  Routing(int T, int E, int K) {
    for (int t = 0; t < T; ++t) {
      std::vector<int32_t> chosen;
      for (int k = 0; k < K; ++k) {
        int32_t e = int32_t((uniform(g_stream, t * K + k) + 1) * 0.5 * E) % E;
        while (std::find(chosen.begin(), chosen.end(), e) != chosen.end()) e = (e + 1) % E;
        chosen.push_back(e);
        expert.push_back(e);
        weight.push_back(float(0.5 + 0.5 * uniform(g_stream + 1, t * K + k)));
      }
    }
    g_stream += 2;
    const Grouping g(expert, E);
    offsets = g.offsets, rows = g.rows, pair_row = g.pair_row;
  }
};

void check_group(int T) {
  namespace G = moe_group_by_expert;
  const Routing r(T, G::EXPERTS, G::TOP_K);
  Staging in;
  int32_t* d_ex = in(r.expert);
  int32_t* d_off = poisoned<int32_t>(G::EXPERTS + 1);
  int32_t* d_rows = poisoned<int32_t>(size_t(T) * G::TOP_K);
  int32_t* d_pair = poisoned<int32_t>(size_t(T) * G::TOP_K);
  CK(in.around([&] { return G::launch(d_ex, T, d_off, d_rows, d_pair, 0); }));
  CK(cudaDeviceSynchronize());
  expect_equal("moe_group_by_expert", T, "offsets", r.offsets, download(d_off, G::EXPERTS + 1));
  expect_equal("moe_group_by_expert", T, "rows", r.rows, download(d_rows, size_t(T) * G::TOP_K));
  expect_equal("moe_group_by_expert", T, "pair_row", r.pair_row, download(d_pair, size_t(T) * G::TOP_K));
  cudaFree(d_ex), cudaFree(d_off), cudaFree(d_rows), cudaFree(d_pair);
}

void check_moe_w13(int T) {
  namespace M = moe_w13_swiglu;
  const Routing r(T, M::EXPERTS, M::TOP_K);
  auto normed = rand_vec<float>(size_t(T) * M::DIM, 1.0);
  auto w13 = rand_vec<W>(size_t(M::EXPERTS) * M::EXPERT_STRIDE, 1.0 / std::sqrt(double(M::DIM)));
  Staging in;
  float* d_x = in(normed);
  int32_t* d_off = in(r.offsets);
  int32_t* d_rows = in(r.rows);
  W* d_w = upload(w13);
  float* d_h = poisoned<float>(size_t(T) * M::TOP_K * M::HIDDEN);
  CK(M::prepare());
  uint16_t* d_a16 = poisoned<uint16_t>(size_t(T) * M::TOP_K * M::DIM);
  CK(in.around([&] { return M::launch(d_x, T, d_off, d_rows, d_w, d_a16, d_h, 0); }));
  CK(cudaDeviceSynchronize());
  const Vec xd = widen(normed);
  Vec ref(size_t(T) * M::TOP_K * M::HIDDEN);
  const auto rows_of = by_expert(M::EXPERTS, T * M::TOP_K, [&](int row) { return r.expert[r.rows[row]]; });
  for (int e = 0; e < M::EXPERTS; ++e) {  // row: the token of pair r.rows[row] through its expert's w1 | w3
    const std::vector<int>& rs = rows_of[e];
    const Vec x = gather(xd, M::DIM, rs, [&](int row) { return r.rows[row] / M::TOP_K; });
    const Vec ab = matmul(w13, x.data(), int(rs.size()), int64_t(e) * 2 * M::HIDDEN, 2 * M::HIDDEN, M::DIM);
    for (size_t i = 0; i < rs.size(); ++i) {
      const double *a = ab.data() + int64_t(i) * 2 * M::HIDDEN, *b = a + M::HIDDEN;
      for (int u = 0; u < M::HIDDEN; ++u) ref[int64_t(rs[i]) * M::HIDDEN + u] = silu(a[u]) * b[u];
    }
  }
  expect_close("moe_w13_swiglu", T, "hidden", ref, widen(download(d_h, size_t(T) * M::TOP_K * M::HIDDEN)), T > 1 ? kTolW : kTolF32);
  if (T == 1) {
    // Routing never written (MC_CUDA_DIAG_SKIP left the gate out; activations start zeroed): offsets
    // and rows all 0. expert_of is bounded by EXPERTS: every row reads the last expert, token 0
    // (unbounded, it read past the offsets, which the emulator reports).
    int32_t* d_zoff = upload(std::vector<int32_t>(M::EXPERTS + 1, 0));
    int32_t* d_zrows = upload(std::vector<int32_t>(M::TOP_K, 0));
    float* d_zh = poisoned<float>(size_t(M::TOP_K) * M::HIDDEN);
    CK(M::launch(d_x, 1, d_zoff, d_zrows, d_w, d_a16, d_zh, 0));
    CK(cudaDeviceSynchronize());
    const Vec ab = matmul(w13, xd.data(), 1, int64_t(M::EXPERTS - 1) * 2 * M::HIDDEN, 2 * M::HIDDEN, M::DIM);
    Vec zref(size_t(M::TOP_K) * M::HIDDEN);
    for (int k = 0; k < M::TOP_K; ++k)
      for (int u = 0; u < M::HIDDEN; ++u) zref[int64_t(k) * M::HIDDEN + u] = silu(ab[u]) * ab[M::HIDDEN + u];
    expect_close("moe_w13_swiglu", T, "hidden, zero routing", zref, widen(download(d_zh, size_t(M::TOP_K) * M::HIDDEN)), kTolF32);
    cudaFree(d_zoff), cudaFree(d_zrows), cudaFree(d_zh);
  }
  cudaFree(d_x), cudaFree(d_off), cudaFree(d_rows), cudaFree(d_w), cudaFree(d_h), cudaFree(d_a16);
}

void check_moe_w2(int T) {
  namespace M = moe_w2_combine_residual;
  const Routing r(T, M::EXPERTS, M::TOP_K);
  auto hidden = rand_vec<float>(size_t(T) * M::TOP_K * M::HIDDEN, 1.0);
  auto w2 = rand_vec<W>(size_t(M::EXPERTS) * M::EXPERT_STRIDE, 1.0 / std::sqrt(double(M::HIDDEN)));
  auto residual = rand_vec<float>(size_t(T) * M::DIM, 1.0);
  Staging in;
  float* d_h = in(hidden);
  int32_t* d_off = in(r.offsets);
  int32_t* d_pair = in(r.pair_row);
  int32_t* d_ex = in(r.expert);
  float* d_wt = in(r.weight);
  W* d_w = upload(w2);
  float* d_tmp = poisoned<float>(size_t(T) * M::TOP_K * M::DIM);
  float* d_r = in(residual);
  CK(M::prepare());
  uint16_t* d_a16 = poisoned<uint16_t>(size_t(T) * M::TOP_K * M::HIDDEN);
  const NextWeights next;
  CK(in.around([&] { return M::launch(d_h, T, d_off, d_pair, d_ex, d_wt, d_w, d_tmp, d_a16, d_r, next.l2(), 0); }));
  CK(cudaDeviceSynchronize());
  next.expect_prefetched("moe_w2_combine_residual", T, decode_gemv(T));
  const Vec hd = widen(hidden);
  Vec y(size_t(T) * M::TOP_K * M::DIM);  // per pair: its hidden row through its expert's w2
  const auto pairs_of = by_expert(M::EXPERTS, T * M::TOP_K, [&](int pair) { return r.expert[pair]; });
  for (int e = 0; e < M::EXPERTS; ++e) {
    const std::vector<int>& ps = pairs_of[e];
    const Vec x = gather(hd, M::HIDDEN, ps, [&](int pair) { return r.pair_row[pair]; });
    const Vec ye = matmul(w2, x.data(), int(ps.size()), int64_t(e) * M::DIM, M::DIM, M::HIDDEN);
    for (size_t i = 0; i < ps.size(); ++i) std::copy_n(ye.begin() + int64_t(i) * M::DIM, M::DIM, y.begin() + int64_t(ps[i]) * M::DIM);
  }
  Vec ref(residual.begin(), residual.end());
  for (int t = 0; t < T; ++t)
    for (int k = 0; k < M::TOP_K; ++k) {
      const int pair = t * M::TOP_K + k;
      for (int d = 0; d < M::DIM; ++d) ref[int64_t(t) * M::DIM + d] += r.weight[pair] * y[int64_t(pair) * M::DIM + d];
    }
  expect_close("moe_w2_combine_residual", T, "residual", ref, widen(download(d_r, size_t(T) * M::DIM)), T > 1 ? kTolW : kTolF32);
  cudaFree(d_h), cudaFree(d_off), cudaFree(d_pair), cudaFree(d_ex), cudaFree(d_wt), cudaFree(d_w), cudaFree(d_tmp), cudaFree(d_r), cudaFree(d_a16);
}
#endif

/** Launched with PDL after stage_kernel: its input before griddepcontrol.wait (out[0]) and after it (out[1]). */
__global__ void pdl_probe_kernel(const float* in, float* out) {
  if (threadIdx.x == 0) out[0] = *static_cast<const volatile float*>(in);
  mc::wait_for_previous_kernel();
  if (threadIdx.x == 0) out[1] = *static_cast<const volatile float*>(in);
}
/**
 * Whether the staged checks overlapped on this GPU: a PDL launch after stage_kernel that reads its
 * input before its wait should see the poison (a line, not a check: it depends on the GPU and the
 * driver), and after the wait the value (a check). Not on the emulator, whose PDL check forbids the
 * early read.
 */
void check_pdl_overlap() {
#if !defined(__CUDACC_EMULATED__)
  Staging in;
  float* d_in = in(std::vector<float>{1.f});
  float* d_out = poisoned<float>(2);
  CK(in.around([&] { return mc::launch_pdl(true, pdl_probe_kernel, dim3(1), dim3(32), 0, cudaStream_t(0), static_cast<const float*>(d_in), d_out); }));
  CK(cudaDeviceSynchronize());
  const auto out = download(d_out, 2);
  std::printf("PDL overlap: %s\n", !mc::device_info().pdl ? "no PDL launches here (a GPU before sm_90, or MC_CUDA_PDL=off): the staged checks ran in order"
                                   : std::isnan(out[0])   ? "a PDL launch read its input before its wait while stage_kernel ran: the staged checks overlapped"
                                                          : "not seen (a PDL launch read its input only once it was written): the staged checks may not have overlapped");
  expect_close("pdl_probe", 1, "after the wait", Vec{1.0}, Vec{double(out[1])}, 0.0);
  cudaFree(d_in), cudaFree(d_out);
#endif
}

/** MC_CUDA_PREFETCH_MB: "N" or "N,M" whole MiB, capped at the L2; anything else switches the prefetch off. */
void check_prefetch_setting() {
  struct Case { const char* text; int64_t between, across; bool valid; };
  const int64_t MiB = 1 << 20;
  const Case cases[] = {{nullptr, 0, 0, true}, {"8", 8 * MiB, 8 * MiB, true}, {"8,24", 8 * MiB, 24 * MiB, true}, {"0,16", 0, 16 * MiB, true},
                        {"999", 50 * MiB, 50 * MiB, true}, {"99999999999999999999", 50 * MiB, 50 * MiB, true}, {"", 0, 0, false}, {" 8", 0, 0, false},
                        {"+8", 0, 0, false}, {"8,", 0, 0, false}, {"8;4", 0, 0, false}, {"8,4,2", 0, 0, false}, {"-1", 0, 0, false}, {"8MB", 0, 0, false}};
  bool ok = true;
  for (const Case& c : cases) {
    int64_t between = -1, across = -1;
    const bool valid = mc::parse_prefetch_mib(c.text, 50 * int(MiB), between, across);
    if (between != c.between || across != c.across || valid != c.valid) {
      std::printf("  MC_CUDA_PREFETCH_MB=%s gave %lld, %lld bytes (%s), not %lld, %lld (%s)\n", c.text ? c.text : "(unset)", (long long)between, (long long)across,
                  valid ? "valid" : "refused", (long long)c.between, (long long)c.across, c.valid ? "valid" : "refused");
      ok = false;
    }
  }
  ++g_checks;
  if (!ok) ++g_failures;
  std::printf("%s  %-32s T=%-3d %-14s %s\n", ok ? "ok  " : "FAIL", "parse_prefetch_mib", 0, "settings", ok ? "exact" : "differs");
}

/**
 * MC_CHECKS: which groups of checks run, a comma list of decode (the GEMVs of one token, the settings,
 * the PDL probe), prefill (the GEMMs of many tokens), attention and chain (MC_CUDA_DECODE's chains);
 * unset, every group. One group alone is a rerun of what failed, or a seeded bug's test on the
 * emulator (test/cuda/emulator.test.ts), without the others' time.
 */
bool checks_on(const char* group) {
  static const char* const kGroups[] = {"decode", "prefill", "attention", "chain"};
  const char* list = std::getenv("MC_CHECKS");
  if (list == nullptr) return true;
  bool on = false;
  for (const char* p = list;;) {
    const char* end = std::strchr(p, ',');
    const size_t n = end != nullptr ? size_t(end - p) : std::strlen(p);
    bool known = false;
    for (const char* g : kGroups) known = known || (std::strlen(g) == n && std::strncmp(g, p, n) == 0);
    if (!known) {
      std::printf("kernels.cu: MC_CHECKS=%s names \"%.*s\"; the groups are decode, prefill, attention, chain (unset: all)\n", list, int(n), p);
      std::exit(2);
    }
    on = on || (std::strlen(group) == n && std::strncmp(group, p, n) == 0);
    if (end == nullptr) return on;
    p = end + 1;
  }
}

/** The attention's checks (group attention): decode and prefill, its settings, the cluster kernel. */
void check_attentions(int tp, int tl, int major) {
  // Decode over a full cache with empty splits, a window over a wrapped ring, prefill across the wrap
  // (positions 100 .. 100 + T - 1 cross slot 0 of the 64-slot ring at 128 for T > 28).
  check_attention<0, 256>(1, 200);
  check_attention<0, 256>(1, 3);
  check_attention<16, 64>(1, 150);
  check_attention<0, 256>(tp, 100);
  check_attention<16, 64>(tp < 48 ? tp : 48, 100);
  check_attention<0, 8192>(1, 5000);
  // Decode splits of many tiles (more than the cp.async ring's stages): a long full cache, and a
  // window over a ring that has wrapped several times.
  check_attention<0, 32768>(1, 30000);
  check_attention<4096, 4608>(1, 20000);
  // Long prefills: many 64-key tiles, a window that starts to slide inside the call (half the rows
  // before position 4096, half from it: also with the emulator's shorter tl), rows past T.
  check_attention<0, 1024>(tl, 50);
  check_attention<4096, 8192>(tl < 300 ? tl : 300, 4096 - (tl < 300 ? tl : 300) / 2);
  check_attention<16, 64>(tl, 90);
  // MC_CUDA_ATTN_BLOCKS=256: half the decode splits a KV head of the default where it doubles them
  // (run 26: 8 KV heads or more), so a long cache's splits take twice the tiles each; a short one
  // has fewer empty splits.
  with_setting(mc::device_info().attn_wide, false, "  [MC_CUDA_ATTN_BLOCKS=256]", [&] {
    check_attention<0, 8192>(1, 3);
    check_attention<0, 8192>(1, 5000);
    check_attention<0, 32768>(1, 30000);
    check_attention<4096, 4608>(1, 20000);
  });
  // MC_CUDA_ATTN_CLUSTER: the decode attention as one kernel, a cluster of blocks a KV head merging
  // its splits through distributed shared memory, against the float64 reference (a tile a block; a
  // window; many tiles a block through the ring: a long cache, a window over a ring wrapped several
  // times), and bit for bit against the split kernels where each split of both has one tile.
  // Clusters exist from sm_90 (the emulator's GPU is one); where the tile would not fit, not at all.
  if (major >= 9 && attention_gqa_window::CLUSTER_FITS) {
    with_setting(mc::device_info().attn_cluster_positions, mc::kMaxClusterPositions, "  [MC_CUDA_ATTN_CLUSTER]", [&] {
      check_attention<0, 256>(1, 200);
      check_attention<16, 64>(1, 150);
      check_attention<0, 8192>(1, 5000);
      check_attention<4096, 4608>(1, 20000);
    });
    check_attention_cluster_bits<0, 8192>(3);
    check_attention_cluster_bits<0, 8192>(200);
    check_attention_cluster_bits<0, 8192>(std::min(511, 32 * std::min(attention_gqa_window::default_splits<0, 8192>(), attention_gqa_window::cluster_splits<0, 8192>()) - 1));
    check_attention_cluster_bits<16, 64>(150);
  } else {
    std::printf("MC_CUDA_ATTN_CLUSTER: not checked (%s)\n", major < 9 ? "no thread-block clusters before compute capability 9.0" : "the one-kernel tile does not fit a block");
  }
}

/** Device-to-device copy bandwidth (bytes read + written per second), the decode ceiling's denominator. */
void copy_bandwidth() {
  const size_t bytes = size_t(2) << 30;
  void *a = nullptr, *b = nullptr;
  CK(cudaMalloc(&a, bytes));
  CK(cudaMalloc(&b, bytes));
  CK(cudaMemset(a, 0x3c, bytes));
  cudaEvent_t start, stop;
  CK(cudaEventCreate(&start));
  CK(cudaEventCreate(&stop));
  for (int i = 0; i < 3; ++i) CK(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));
  std::vector<float> ms;
  for (int i = 0; i < 20; ++i) {
    CK(cudaEventRecord(start));
    CK(cudaMemcpyAsync(i % 2 ? a : b, i % 2 ? b : a, bytes, cudaMemcpyDeviceToDevice));
    CK(cudaEventRecord(stop));
    CK(cudaEventSynchronize(stop));
    float t = 0;
    CK(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  std::printf("copy_bandwidth_gbs %.1f  (2 GiB device-to-device, median of 20, read + write)\n", 2.0 * bytes / (ms[ms.size() / 2] * 1e-3) / 1e9);
  cudaFree(a), cudaFree(b);
}
}  // namespace

int main(int argc, char** argv) {
  // Every kernel loaded at the first CUDA call. Loaded lazily (CUDA's default since 12.2), a kernel's
  // first launch may synchronize the context, so it waits for stage_kernel to finish its copies (or
  // its 50 ms bound) and can never start beside it: on the H200 of 2026-11-26 every checker printed
  // "PDL overlap: not seen" so (its probe kernel is launched once). Read when CUDA initializes.
  setenv("CUDA_MODULE_LOADING", "EAGER", 1);
  if (argc > 1 && std::strcmp(argv[1], "--copy-bandwidth") == 0) return copy_bandwidth(), 0;
  g_seed = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
  const int tp = argc > 2 ? std::atoi(argv[2]) : 37;   // prefill tokens: not a multiple of the 64-row GEMM tile
  const int tl = argc > 3 ? std::atoi(argv[3]) : 700;  // a long prefill: the 128 x 128 GEMM tile wherever it is chosen, many key tiles
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("kernel checks on %s, weights %s, seed %llu\n", prop.name, std::is_same<W, float>::value ? "f32" : std::is_same<W, mc::bf16>::value ? "bf16" : "f16",
              (unsigned long long)g_seed);
  CK(wo_residual::prepare());
#if MC_DENSE
  CK(w2_residual::prepare());
#endif
  // The prefill GEMM engine (MC_CUDA_GEMM, read by init_device_info): asking for wgmma where this
  // GPU's code has none is a failure, not a silent fallback to mma.sync.
  const char* engine = std::getenv("MC_CUDA_GEMM");
  const mc::DeviceInfo& info = mc::device_info();
  std::printf("prefill GEMM engine: %s\n", info.wgmma_all ? "wgmma (every prefill GEMM)" : info.wgmma ? "wgmma where chosen, else mma.sync" : "mma.sync");
  if (engine != nullptr && std::strncmp(engine, "wgmma", 5) == 0 && !info.wgmma) {
    std::printf("FAIL MC_CUDA_GEMM=%s, but the code for this GPU has no wgmma engine (needs an sm_90a build on an sm_90 GPU)\n", engine);
    ++g_failures;
  }
  const bool decode = checks_on("decode"), prefill = checks_on("prefill"), attention = checks_on("attention"), chain = checks_on("chain");
  if (decode) check_prefetch_setting();
  init_staging();
  if (decode) check_pdl_overlap();
  const auto projections = [](int T) {
    check_qkv<1024>(T);
    check_residual_projection<wo_residual::DIM, wo_residual::IN>("wo_residual", T, wo_residual::launch);
    check_output(T);
#if MC_DENSE
    check_w13(T);
    check_residual_projection<w2_residual::DIM, w2_residual::HIDDEN>("w2_residual", T, w2_residual::launch);
#else
    check_gate(T);
    check_group(T);
    check_moe_w13(T);
    check_moe_w2(T);
#endif
  };
  for (int T : {1, tp, tl}) {
    if (!(T == 1 ? decode : prefill)) continue;
    check_embedding(T);
    projections(T);
  }
#if MC_DENSE
  if (chain) {
    check_decode_chain<false>(true);
    check_decode_chain<false>(false);
    // The layer chain over a long full cache and over a window of a wrapped ring (splits of several
    // tiles where the model has as many KV heads as the 7B), the last layer's too, and on a grid of 37
    // blocks, each taking several attention items and combine heads in turn.
    check_decode_chain<true, 0, 8192>(true);
    check_decode_chain<true, 4096, 4608>(true);
    check_decode_chain<true, 4096, 4608>(false);
    check_decode_chain<true, 0, 8192>(true, 37);
  }
#endif
  // MC_CUDA_X=shared: wo (and w2 in a dense model) copy x into shared memory as the other GEMVs do
  // (where the default reads it in the stream, mc::XRow); the chain (x in shared memory) gives the
  // same bits as both.
  with_setting(mc::device_info().x_stream, false, "  [MC_CUDA_X=shared]", [&] {
    if (decode) projections(1);
    if (decode && !mc::kTensorCores<W>) projections(tp);  // f32 weights: a GEMV of tp tokens, x_in per token
#if MC_DENSE
    if (chain) check_decode_chain<false>(true);
#endif
  });
  // The prefill GEMMs with A read through the Op (MC_CUDA_A16=0), the path the default no longer takes.
  if (prefill && mc::kTensorCores<W> && mc::device_info().a16_min_rows > 0) with_setting(mc::device_info().a16_min_rows, 0, "  [A read through the Op]", [&] { projections(tp); });
  if (attention) check_attentions(tp, tl, prop.major);
  std::printf("%d checks, %d failed\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
