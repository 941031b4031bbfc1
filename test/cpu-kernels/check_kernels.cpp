// Checks the kernels of templates/include/mc_cpu.hpp against float64 references on random inputs:
// mc::matmul and mc::matmul_pair (every path: decode rows, prefill tiles of 16/32/48 tokens, tails of
// K, N and T, strided and misaligned weight rows, f32 and bf16) and mc::attention (full and sliding
// window, rings that wrap, tails of a key block, GROUP 1 and 4, head_dim 16/64/24). Outputs are
// poisoned with NaN first and every element must be written exactly once.
//
// Prints one line per case: `<case> <relative L2 error> <tolerance> <ok|FAIL>`, then `done`.
// Built by test/cpu-kernels/kernels.test.ts with the model flags, once as is and once with
// -mno-avx512f (the portable path).
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "mc_cpu.hpp"

namespace {
int failures = 0;

void report(const std::string& name, double err, double tol) {
  const bool ok = err <= tol;  // NaN never passes
  failures += !ok;
  std::printf("%s %.3e %.0e %s\n", name.c_str(), err, tol, ok ? "ok" : "FAIL");
}

std::mt19937 rng(12345);
float normal() { return std::normal_distribution<float>(0.f, 1.f)(rng); }

template <typename W>
const char* dtype() { return sizeof(W) == 4 ? "f32" : "bf16"; }

/** Weights as the runtime hands them out: rows `stride` apart, the first one `offset` elements into the buffer. */
template <typename W>
struct Matrix {
  std::vector<W> buf;
  const W* base;
  int64_t stride;
  Matrix(int rows, int cols, int64_t stride_, int offset) : buf(size_t(rows) * stride_ + offset + 1), stride(stride_) {
    for (auto& v : buf) v = mc::from_f32<W>(normal() / std::sqrt(float(cols)));
    base = buf.data() + offset;
  }
  const W* operator()(int n) const { return base + int64_t(n) * stride; }
  double at(int n, int k) const { return double(mc::to_f32((*this)(n)[k])); }
};

/** Tolerance: exact f32 arithmetic up to summation order, or x rounded to bf16 in the prefill bf16 dot product. */
template <typename W>
double matmul_tolerance(int T) { return sizeof(W) == 4 || T < 4 ? 1e-5 : 1e-2; }

template <int K, typename W>
void check_matmul(int T, int N, int extra_stride, int offset) {
  Matrix<W> w(N, K, K + extra_stride, offset);
  std::vector<float> x(size_t(T) * K);
  for (auto& v : x) v = normal();
  std::vector<float> y(size_t(T) * N, NAN);
  std::vector<int> writes(size_t(T) * N, 0);
  mc::matmul<K>(T, [&](int t) { return x.data() + int64_t(t) * K; }, N, w, [&](int t, int n, float v) {
    y[size_t(t) * N + n] = v;
    ++writes[size_t(t) * N + n];  // threads split n: no two threads touch one element
  });
  double e2 = 0, r2 = 0;
  for (int t = 0; t < T; ++t)
    for (int n = 0; n < N; ++n) {
      double ref = 0;
      for (int k = 0; k < K; ++k) ref += double(x[size_t(t) * K + k]) * w.at(n, k);
      const double got = writes[size_t(t) * N + n] == 1 ? y[size_t(t) * N + n] : NAN;
      e2 += (got - ref) * (got - ref), r2 += ref * ref;
    }
  char name[160];
  std::snprintf(name, sizeof name, "matmul/%s/K%d/N%d/T%d/stride+%d/offset%d", dtype<W>(), K, N, T, extra_stride, offset);
  report(name, std::sqrt(e2 / r2), matmul_tolerance<W>(T));
}

template <int K, typename W>
void check_pair(int T, int N) {
  Matrix<W> w1(N, K, K, 0), w3(N, K, K + 3, 1);
  std::vector<float> x(size_t(T) * K);
  for (auto& v : x) v = normal();
  std::vector<float> a(size_t(T) * N, NAN), b(size_t(T) * N, NAN);
  std::vector<int> writes(size_t(T) * N, 0);
  mc::matmul_pair<K>(T, [&](int t) { return x.data() + int64_t(t) * K; }, N, w1, w3, [&](int t, int n, float va, float vb) {
    a[size_t(t) * N + n] = va, b[size_t(t) * N + n] = vb;
    ++writes[size_t(t) * N + n];
  });
  double e2 = 0, r2 = 0;
  for (int t = 0; t < T; ++t)
    for (int n = 0; n < N; ++n) {
      double ra = 0, rb = 0;
      for (int k = 0; k < K; ++k) ra += double(x[size_t(t) * K + k]) * w1.at(n, k), rb += double(x[size_t(t) * K + k]) * w3.at(n, k);
      const bool once = writes[size_t(t) * N + n] == 1;
      const double ga = once ? a[size_t(t) * N + n] : NAN, gb = once ? b[size_t(t) * N + n] : NAN;
      e2 += (ga - ra) * (ga - ra) + (gb - rb) * (gb - rb), r2 += ra * ra + rb * rb;
    }
  char name[160];
  std::snprintf(name, sizeof name, "matmul_pair/%s/K%d/N%d/T%d", dtype<W>(), K, N, T);
  report(name, std::sqrt(e2 / r2), matmul_tolerance<W>(T));
}

template <int K, typename W>
void matmul_cases() {
  for (int T : {1, 2, 3, 4, 5, 16, 17, 32, 33, 48, 49, 100})
    for (int N : {1, 7, 8, 9, 17, 40}) check_matmul<K, W>(T, N, 0, 0);
  check_matmul<K, W>(1, 33, 5, 1);  // a column slice (row stride > K) starting at an odd element
  check_matmul<K, W>(1, 40, 0, 3);  // rows off cache-line boundaries by 3 elements (all alike when 64 | K * sizeof(W))
  check_matmul<K, W>(2, 17, 0, 8);
  check_matmul<K, W>(50, 33, 5, 1);
  for (int T : {1, 3, 4, 20, 40, 60})
    for (int N : {1, 3, 4, 5, 9}) check_pair<K, W>(T, N);
}

/**
 * mc::attention of T queries at positions start.. against a cache filled with the keys and values
 * of positions 0 .. start + T - 1 (each at slot pos % KV_SLOTS), checked against float64.
 */
template <int HEAD_DIM, int GROUP, int N_KV_HEADS, int WINDOW, int KV_SLOTS, typename KV>
void check_attention(int start, int T) {
  constexpr int KV_DIM = N_KV_HEADS * HEAD_DIM, Q_DIM = KV_DIM * GROUP;
  using Keys = mc::KeyBlocks<HEAD_DIM, KV_SLOTS>;
  const int n_pos = start + T;
  std::vector<float> keys(size_t(n_pos) * KV_DIM), values(size_t(n_pos) * KV_DIM), q(size_t(T) * Q_DIM);
  for (auto& v : keys) v = normal();
  for (auto& v : values) v = normal();
  for (auto& v : q) v = normal();
  const size_t cache_elems = size_t(KV_SLOTS) * KV_DIM;
  std::vector<KV> k_cache(cache_elems, mc::from_f32<KV>(NAN)), v_cache(cache_elems, mc::from_f32<KV>(NAN));  // unwritten slots are NaN: reading one fails the case
  for (int p = 0; p < n_pos; ++p)  // later positions overwrite earlier ones in a ring, as the model's writes do
    for (int g = 0; g < N_KV_HEADS; ++g)
      for (int d = 0; d < HEAD_DIM; ++d) {
        k_cache[Keys::index(g, p % KV_SLOTS, d)] = mc::from_f32<KV>(keys[size_t(p) * KV_DIM + g * HEAD_DIM + d]);
        v_cache[size_t(p % KV_SLOTS) * KV_DIM + g * HEAD_DIM + d] = mc::from_f32<KV>(values[size_t(p) * KV_DIM + g * HEAD_DIM + d]);
      }
  std::vector<int32_t> positions(T);
  for (int t = 0; t < T; ++t) positions[t] = start + t;
  std::vector<float> out(size_t(T) * Q_DIM, NAN), scratch(size_t(omp_get_max_threads()) * GROUP * KV_SLOTS);
  mc::attention<HEAD_DIM, GROUP, N_KV_HEADS, WINDOW, KV_SLOTS>(q.data(), T, positions.data(), k_cache.data(), v_cache.data(), out.data(),
                                                              scratch.data());
  double e2 = 0, r2 = 0;
  for (int t = 0; t < T; ++t) {
    const int p = start + t, lo = WINDOW > 0 ? std::max(0, p - WINDOW + 1) : 0;
    for (int h = 0; h < N_KV_HEADS * GROUP; ++h) {
      const int g = h / GROUP;
      std::vector<double> s(p - lo + 1);
      double mx = -INFINITY, sum = 0;
      for (int j = lo; j <= p; ++j) {
        double dot = 0;
        for (int d = 0; d < HEAD_DIM; ++d)
          dot += double(q[size_t(t) * Q_DIM + h * HEAD_DIM + d]) * mc::to_f32(mc::from_f32<KV>(keys[size_t(j) * KV_DIM + g * HEAD_DIM + d]));
        s[j - lo] = dot / std::sqrt(double(HEAD_DIM));
        mx = std::max(mx, s[j - lo]);
      }
      for (auto& v : s) sum += (v = std::exp(v - mx));
      for (int d = 0; d < HEAD_DIM; ++d) {
        double ref = 0;
        for (int j = lo; j <= p; ++j) ref += s[j - lo] / sum * mc::to_f32(mc::from_f32<KV>(values[size_t(j) * KV_DIM + g * HEAD_DIM + d]));
        const double got = out[size_t(t) * Q_DIM + h * HEAD_DIM + d];
        e2 += (got - ref) * (got - ref), r2 += ref * ref;
      }
    }
  }
  char name[200];
  std::snprintf(name, sizeof name, "attention/%s/head_dim%d/group%d/kv_heads%d/window%d/slots%d/start%d/T%d", sizeof(KV) == 4 ? "f32" : "bf16",
                HEAD_DIM, GROUP, N_KV_HEADS, WINDOW, KV_SLOTS, start, T);
  report(name, std::sqrt(e2 / r2), 2e-6);
}

template <typename KV>
void attention_cases() {
  for (int T : {1, 5, 16, 17, 40})
    for (int start : {0, 3, 50}) {
      check_attention<64, 4, 2, 0, 128, KV>(start, T);   // full attention, context 128 (8 whole key blocks)
      check_attention<16, 1, 1, 0, 100, KV>(start, T);   // a last block of 4 slots
      check_attention<24, 2, 2, 0, 100, KV>(start, T);   // head_dim not a multiple of 16: portable path
    }
  for (int T : {1, 6, 20})
    for (int start : {0, 7, 30, 61}) {
      check_attention<64, 4, 2, 8, 8 + 20 - 1, KV>(start, T);  // window 8, a ring of 27 slots that wraps
      check_attention<16, 2, 1, 13, 13 + 20 - 1, KV>(start, T);
    }
  check_attention<128, 4, 1, 0, 300, KV>(250, 40);  // head_dim 128 (Mistral 7B's), long context
}
}  // namespace

int main() {
  std::printf("threads %d, avx512 %s\n", omp_get_max_threads(),
#if defined(MC_AVX512)
              "yes"
#else
              "no"
#endif
  );
  matmul_cases<64, float>();
  matmul_cases<72, float>();
  matmul_cases<33, float>();
  matmul_cases<64, mc::bf16>();
  matmul_cases<72, mc::bf16>();
  matmul_cases<33, mc::bf16>();
  check_matmul<1024, float>(512, 24, 0, 0);
  check_matmul<1024, mc::bf16>(512, 24, 0, 0);
  attention_cases<float>();
  attention_cases<mc::bf16>();
  std::printf("done, %d failed\n", failures);
  return failures == 0 ? 0 : 1;
}
