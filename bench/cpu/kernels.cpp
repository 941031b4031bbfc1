// Kernel microbenchmark: mc::matmul / mc::matmul_pair of templates/include/mc_cpu.hpp on the shapes of
// the benchmark's dense model (dim 1024, hidden 3584, vocab 32000), decode (1 token: GB/s of weights
// streamed) and prefill (512 tokens: GFLOP/s), f32 and bf16 weights; each result checked against a
// double-precision dot product. For developing kernels; `npm run bench` measures whole models.
//
//   g++ -std=c++20 -O3 -march=native -fopenmp -Iruntime/abi -Itemplates/include bench/cpu/kernels.cpp -o .bench/bin/kernels
//   OMP_NUM_THREADS=2 .bench/bin/kernels [filter]
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "mc_cpu.hpp"

namespace {
/** Row n of a dense [N, K] matrix (one type for every matrix, as mc::Rows). */
template <typename W, int K>
struct DenseRows {
  const W* base;
  const W* operator()(int n) const { return base + int64_t(n) * K; }
};

template <typename W>
const char* dtype_name() { return sizeof(W) == 4 ? "f32" : "bf16"; }

template <typename F>
double best_seconds(F&& f, int reps) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

/** Weights of `copies` distinct [N, K] matrices, so that a decode loop streams from memory, not cache. */
template <typename W>
std::vector<W> random_weights(int64_t n, uint32_t seed, float scale) {
  std::vector<W> w(n);
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, scale);
  for (auto& v : w) v = mc::from_f32<W>(dist(rng));
  return w;
}

template <int K, int N, typename W>
void bench_matmul(const char* what, int T, const char* filter) {
  if (filter && !std::strstr(what, filter)) return;
  // Enough copies that one pass over all of them (≥ 256 MB) cannot sit in the 32 MB L3.
  const int64_t mat = int64_t(N) * K;
  const int copies = T == 1 ? int(std::max<int64_t>(1, (int64_t(256) << 20) / (mat * int64_t(sizeof(W))))) : 1;
  std::vector<W> w = random_weights<W>(mat * copies, 1, 1.0f / std::sqrt(float(K)));
  std::vector<float> x(int64_t(T) * K), y(int64_t(T) * N);
  std::mt19937 rng(2);
  std::normal_distribution<float> dist(0.f, 1.f);
  for (auto& v : x) v = dist(rng);
  int copy = 0;
  auto run = [&] {
    const W* base = w.data() + mat * copy;
    copy = (copy + 1) % copies;
    mc::matmul<K>(T, [&](int t) { return x.data() + int64_t(t) * K; }, N, DenseRows<W, K>{base},
                  [&](int t, int n, float v) { y[int64_t(t) * N + n] = v; });
  };
  run();
  // check copy 0 against double
  copy = 0;
  std::fill(y.begin(), y.end(), NAN);
  run();
  double err2 = 0, ref2 = 0;
  for (int t = 0; t < T; t += std::max(1, T / 7))
    for (int n = 0; n < N; n += 13) {
      double ref = 0;
      for (int k = 0; k < K; ++k) ref += double(x[int64_t(t) * K + k]) * double(mc::to_f32(w[int64_t(n) * K + k]));
      const double d = double(y[int64_t(t) * N + n]) - ref;
      err2 += d * d, ref2 += ref * ref;
    }
  const int reps = T == 1 ? copies * 4 : 3;
  const double s = best_seconds(run, reps);
  const double gbs = double(mat) * sizeof(W) / s / 1e9;
  const double gflops = 2.0 * T * mat / s / 1e9;
  std::printf("%-24s %-4s T=%-4d %8.1f us  %6.1f GB/s  %7.1f GFLOP/s  relL2 %.1e\n", what, dtype_name<W>(), T, s * 1e6, gbs, gflops,
              std::sqrt(err2 / ref2));
}

template <int K, int N, typename W>
void bench_pair(const char* what, int T, const char* filter) {
  if (filter && !std::strstr(what, filter)) return;
  const int64_t mat = int64_t(N) * K;
  const int copies = T == 1 ? int(std::max<int64_t>(1, (int64_t(256) << 20) / (2 * mat * int64_t(sizeof(W))))) : 1;
  std::vector<W> w1 = random_weights<W>(mat * copies, 3, 1.0f / std::sqrt(float(K)));
  std::vector<W> w3 = random_weights<W>(mat * copies, 4, 1.0f / std::sqrt(float(K)));
  std::vector<float> x(int64_t(T) * K), y(int64_t(T) * N);
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.f, 1.f);
  for (auto& v : x) v = dist(rng);
  int copy = 0;
  auto run = [&] {
    const W* b1 = w1.data() + mat * copy;
    const W* b3 = w3.data() + mat * copy;
    copy = (copy + 1) % copies;
    mc::matmul_pair<K>(
        T, [&](int t) { return x.data() + int64_t(t) * K; }, N, DenseRows<W, K>{b1}, DenseRows<W, K>{b3}, [&](int t, int n, float a, float b) { y[int64_t(t) * N + n] = a * b; });
  };
  run();
  copy = 0;
  std::fill(y.begin(), y.end(), NAN);
  run();
  double err2 = 0, ref2 = 0;
  for (int t = 0; t < T; t += std::max(1, T / 7))
    for (int n = 0; n < N; n += 13) {
      double a = 0, b = 0;
      for (int k = 0; k < K; ++k) {
        a += double(x[int64_t(t) * K + k]) * double(mc::to_f32(w1[int64_t(n) * K + k]));
        b += double(x[int64_t(t) * K + k]) * double(mc::to_f32(w3[int64_t(n) * K + k]));
      }
      const double d = double(y[int64_t(t) * N + n]) - a * b;
      err2 += d * d, ref2 += a * b * a * b;
    }
  const int reps = T == 1 ? copies * 4 : 3;
  const double s = best_seconds(run, reps);
  std::printf("%-24s %-4s T=%-4d %8.1f us  %6.1f GB/s  %7.1f GFLOP/s  relL2 %.1e\n", what, dtype_name<W>(), T, s * 1e6,
              2.0 * mat * sizeof(W) / s / 1e9, 4.0 * T * mat / s / 1e9, std::sqrt(err2 / ref2));
}

template <typename W>
void all(const char* filter) {
  for (int T : {1, 512}) {
    bench_matmul<1024, 1536, W>("qkv 1536x1024", T, filter);
    bench_matmul<1024, 1024, W>("wo 1024x1024", T, filter);
    bench_pair<1024, 3584, W>("w13 2x3584x1024", T, filter);
    bench_matmul<3584, 1024, W>("w2 1024x3584", T, filter);
    bench_matmul<1024, 32000, W>("output 32000x1024", T == 1 ? 1 : 64, filter);
  }
}
}  // namespace

int main(int argc, char** argv) {
  const char* filter = argc > 1 ? argv[1] : nullptr;
  std::printf("threads %d\n", omp_get_max_threads());
  all<float>(filter);
  all<mc::bf16>(filter);
}
