// Where a CPU decode step loses bandwidth: the products of one decode step of the benchmark's dense
// model (16 layers of qkv, wo, w1|w3, w2, then the output projection; every weight in memory of its
// own, so nothing is served from cache) timed one by one, each step followed by a plain read pass
// over the very same weight buffers (the limit, measured in the same second). Rounds alternate
// step and probe, so the machine's drifting memory speed falls on both alike. Attention, norms and
// the runtime are left out: this is the matrix-vector part alone.
//
//   g++ -std=c++20 -O3 -march=native -fopenmp -Iruntime/abi -Itemplates/include bench/cpu/decode-step.cpp -o .bench/bin/decode-step
//   OMP_NUM_THREADS=2 .bench/bin/decode-step [f32|bf16] [rounds]
//   OMP_NUM_THREADS=2 .bench/bin/decode-step f32 --serve   for each line "N" on stdin, N steps; prints ms per step
//
// --serve is for bench/cpu/outside-products.ts, which alternates it with the model's own decode steps.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "mc_cpu.hpp"

namespace {
constexpr int DIM = 1024, HIDDEN = 3584, QKV = 1536, VOCAB = 32000, LAYERS = 16;

template <typename W, int K>
struct DenseRows {
  const W* base;
  const W* operator()(int n) const { return base + int64_t(n) * K; }
};

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

/**
 * A weight matrix in memory of its own, filled with small values: 64-byte aligned, or MC_MISALIGN
 * bytes past a line boundary (a safetensors tensor starts at any byte; the bench's are at 32).
 */
template <typename W>
W* matrix(int64_t n) {
  static const size_t shift = std::getenv("MC_MISALIGN") ? size_t(std::atoi(std::getenv("MC_MISALIGN"))) : 0;
  auto* p = reinterpret_cast<W*>(static_cast<char*>(std::aligned_alloc(64, size_t(n) * sizeof(W) + 128)) + shift);
  for (int64_t i = 0; i < n; ++i) p[i] = mc::from_f32<W>(0.01f * float(i % 7 - 3));
  return p;
}

/** Two-thread read of every buffer, as the bandwidth probe reads: GB/s. */
double probe(const std::vector<std::pair<const char*, size_t>>& buffers) {
  size_t total = 0;
  for (auto& b : buffers) total += b.second;
  const auto t = Clock::now();
  float sink = 0;
  for (auto& [p, n] : buffers) {
    float s = 0;
#pragma omp parallel reduction(+ : s)
    {
      const int T = omp_get_num_threads(), id = omp_get_thread_num();
      const size_t chunk = n / T / 256 * 256;
      const char* b = p + id * chunk;
      const char* e = id == T - 1 ? p + n / 256 * 256 : b + chunk;
      __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (const char* q = b; q < e; q += 256) {
        a0 = _mm512_add_ps(a0, _mm512_loadu_ps(reinterpret_cast<const float*>(q)));
        a1 = _mm512_add_ps(a1, _mm512_loadu_ps(reinterpret_cast<const float*>(q + 64)));
        a2 = _mm512_add_ps(a2, _mm512_loadu_ps(reinterpret_cast<const float*>(q + 128)));
        a3 = _mm512_add_ps(a3, _mm512_loadu_ps(reinterpret_cast<const float*>(q + 192)));
      }
      s += _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    }
    sink += s;
  }
  const double seconds = since(t);
  if (sink == 1234.5f) std::puts("");
  return double(total) / seconds / 1e9;
}

template <typename W>
void run(int rounds, bool serve) {
  struct Layer { W *qkv, *wo, *w1, *w3, *w2; };
  std::vector<Layer> layers(LAYERS);
  std::vector<std::pair<const char*, size_t>> buffers;
  auto add = [&](W* p, int64_t n) { buffers.push_back({reinterpret_cast<const char*>(p), size_t(n) * sizeof(W)}); return p; };
  for (auto& l : layers) {
    l.qkv = add(matrix<W>(int64_t(QKV) * DIM), int64_t(QKV) * DIM);
    l.wo = add(matrix<W>(int64_t(DIM) * DIM), int64_t(DIM) * DIM);
    l.w1 = add(matrix<W>(int64_t(HIDDEN) * DIM), int64_t(HIDDEN) * DIM);
    l.w3 = add(matrix<W>(int64_t(HIDDEN) * DIM), int64_t(HIDDEN) * DIM);
    l.w2 = add(matrix<W>(int64_t(DIM) * HIDDEN), int64_t(DIM) * HIDDEN);
  }
  W* output = add(matrix<W>(int64_t(VOCAB) * DIM), int64_t(VOCAB) * DIM);
  std::vector<float> x(HIDDEN, 0.5f), y(VOCAB), h(HIDDEN);
  const char* names[5] = {"qkv", "wo", "w1|w3", "w2", "output"};
  const double bytes[5] = {double(QKV) * DIM * sizeof(W), double(DIM) * DIM * sizeof(W), 2.0 * HIDDEN * DIM * sizeof(W),
                           double(DIM) * HIDDEN * sizeof(W), double(VOCAB) * DIM * sizeof(W)};
  const double stepBytes = LAYERS * (bytes[0] + bytes[1] + bytes[2] + bytes[3]) + bytes[4];
  if (!serve) std::printf("%s: %.0f MB per step; per round: step GB/s, probe GB/s, ratio\n", sizeof(W) == 4 ? "f32" : "bf16", stepBytes / 1e6);
  if (serve) std::printf("{\"ready\":true,\"bytes\":%.0f}\n", stepBytes), std::fflush(stdout);
  /** One decode step's products; seconds[k] += the time of each product of kind k. */
  auto step = [&](double* seconds) {
    auto timed = [&](int k, auto&& product) {
      const auto t = Clock::now();
      product();
      seconds[k] += since(t);
    };
    for (auto& l : layers) {
      timed(0, [&] { mc::matmul<DIM>(1, [&](int) { return x.data(); }, QKV, DenseRows<W, DIM>{l.qkv}, [&](int, int n, float v) { y[n] = v; }); });
      timed(1, [&] { mc::matmul<DIM>(1, [&](int) { return x.data(); }, DIM, DenseRows<W, DIM>{l.wo}, [&](int, int n, float v) { y[n] = v; }); });
      timed(2, [&] {
        mc::matmul_pair<DIM>(1, [&](int) { return x.data(); }, HIDDEN, DenseRows<W, DIM>{l.w1}, DenseRows<W, DIM>{l.w3},
                             [&](int, int n, float a, float b) { h[n] = a * b; });
      });
      timed(3, [&] { mc::matmul<HIDDEN>(1, [&](int) { return h.data(); }, DIM, DenseRows<W, HIDDEN>{l.w2}, [&](int, int n, float v) { y[n] = v; }); });
    }
    timed(4, [&] { mc::matmul<DIM>(1, [&](int) { return x.data(); }, VOCAB, DenseRows<W, DIM>{output}, [&](int, int n, float v) { y[n] = v; }); });
  };
  int steps = 0;
  for (int r = 0; serve ? std::scanf("%d", &steps) == 1 : r < rounds; ++r) {
    double seconds[5] = {0, 0, 0, 0, 0};
    const auto t0 = Clock::now();
    for (int i = 0; i < (serve ? std::max(1, steps) : 1); ++i) step(seconds);
    const double elapsed = since(t0);
    if (serve) {
      std::printf("{\"msPerStep\":%.4f}\n", elapsed * 1e3 / std::max(1, steps));
      std::fflush(stdout);
      continue;
    }
    const double step_seconds = elapsed;
    const double limit = probe(buffers);
    std::printf("  round %2d: step %5.1f GB/s (%.1f ms), probe %5.1f GB/s, ratio %.2f;", r, stepBytes / step_seconds / 1e9,
                step_seconds * 1e3, limit, stepBytes / step_seconds / 1e9 / limit);
    for (int k = 0; k < 5; ++k) std::printf(" %s %.1f", names[k], (k == 4 ? 1 : LAYERS) * bytes[k] / seconds[k] / 1e9);
    std::printf("\n");
  }
}
}  // namespace

int main(int argc, char** argv) {
  const std::string dtype = argc > 1 ? argv[1] : "f32";
  const bool serve = argc > 2 && std::string(argv[2]) == "--serve";
  const int rounds = argc > 2 && !serve ? std::atoi(argv[2]) : 10;
  if (!serve) std::printf("threads %d\n", omp_get_max_threads());
  if (dtype == "bf16") run<mc::bf16>(rounds, serve);
  else run<float>(rounds, serve);
}
