// Arithmetic shared by the CPU kernels (templates/cpu/*.hpp.hbs). Not rendered: copied verbatim
// next to the generated sources, so the kernels stay thin and this file compiles on its own.
#pragma once
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "mc_abi.h"

namespace mc {

// ---- element types --------------------------------------------------------------------------
// Weights and the KV cache keep the checkpoint's dtype; arithmetic is float32.
struct bf16 { uint16_t bits; };
struct f16 { uint16_t bits; };

inline float to_f32(float x) { return x; }
inline float to_f32(bf16 x) { return std::bit_cast<float>(uint32_t(x.bits) << 16); }
inline float to_f32(f16 x) { return float(std::bit_cast<_Float16>(x.bits)); }

template <typename T> T from_f32(float x);
template <> inline float from_f32<float>(float x) { return x; }
template <> inline bf16 from_f32<bf16>(float x) {
  uint32_t u = std::bit_cast<uint32_t>(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{uint16_t((u >> 16) | 0x40u)};  // keep NaN a NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
  return bf16{uint16_t(u >> 16)};
}
template <> inline f16 from_f32<f16>(float x) { return f16{std::bit_cast<uint16_t>(_Float16(x))}; }

// ---- small vector pieces ----------------------------------------------------------------------
template <int K, typename W>
inline float dot(const float* __restrict x, const W* __restrict w) {
  float acc = 0.f;
#pragma omp simd reduction(+ : acc)
  for (int k = 0; k < K; ++k) acc += x[k] * to_f32(w[k]);
  return acc;
}

/** out = x * rsqrt(mean(x^2) + eps) * w, computed in float32 as the reference does. */
template <int DIM, typename W>
inline void rmsnorm(const float* __restrict x, const W* __restrict w, float eps, float* __restrict out) {
  float ss = 0.f;
#pragma omp simd reduction(+ : ss)
  for (int i = 0; i < DIM; ++i) ss += x[i] * x[i];
  const float scale = 1.0f / std::sqrt(ss / float(DIM) + eps);
#pragma omp simd
  for (int i = 0; i < DIM; ++i) out[i] = x[i] * scale * to_f32(w[i]);
}

inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

/**
 * RoPE on interleaved pairs (x[2i], x[2i+1]) of each head, angle = pos * theta^(-2i/head_dim).
 * Angles are formed in double: at positions near 1e5 a float angle would lose the low bits.
 */
template <int HEAD_DIM>
struct Rope {
  double inv_freq[HEAD_DIM / 2];
  explicit Rope(double theta) {
    for (int i = 0; i < HEAD_DIM / 2; ++i) inv_freq[i] = std::pow(theta, -2.0 * i / HEAD_DIM);
  }
  void angles(int32_t pos, float* cos_out, float* sin_out) const {
    for (int i = 0; i < HEAD_DIM / 2; ++i) {
      const double a = double(pos) * inv_freq[i];
      cos_out[i] = float(std::cos(a));
      sin_out[i] = float(std::sin(a));
    }
  }
  static void apply(float* x, const float* c, const float* s) {
    for (int i = 0; i < HEAD_DIM / 2; ++i) {
      const float a = x[2 * i], b = x[2 * i + 1];
      x[2 * i] = a * c[i] - b * s[i];
      x[2 * i + 1] = a * s[i] + b * c[i];
    }
  }
};

// ---- matrix products --------------------------------------------------------------------------
/**
 * y[t][n] = sum_k x(t)[k] * row(n)[k] for t < T, n < N, handed to epi(t, n, y) once each.
 * Threads split N; each thread takes 4 weight rows at a time against a tile of tokens, so each
 * weight row is read from memory once per tile and each x row is reused by 4 weight rows.
 */
constexpr int kRowBlock = 4;
constexpr int kTokenTile = 16;

template <int K, typename XRow, typename WRow, typename Epi>
inline void matmul(int T, XRow xrow, int N, WRow wrow, Epi epi) {
#pragma omp parallel for schedule(static)
  for (int n0 = 0; n0 < N; n0 += kRowBlock) {
    const int nb = std::min(kRowBlock, N - n0);
    const auto* w0 = wrow(n0);
    const auto* w1 = wrow(n0 + std::min(1, nb - 1));  // a short tail block repeats its last row
    const auto* w2 = wrow(n0 + std::min(2, nb - 1));
    const auto* w3 = wrow(n0 + std::min(3, nb - 1));
    for (int t0 = 0; t0 < T; t0 += kTokenTile) {
      const int t1 = std::min(T, t0 + kTokenTile);
      for (int t = t0; t < t1; ++t) {
        const float* __restrict x = xrow(t);
        float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
        for (int k = 0; k < K; ++k) {
          const float xv = x[k];
          a0 += xv * to_f32(w0[k]);
          a1 += xv * to_f32(w1[k]);
          a2 += xv * to_f32(w2[k]);
          a3 += xv * to_f32(w3[k]);
        }
        const float acc[kRowBlock] = {a0, a1, a2, a3};
        for (int j = 0; j < nb; ++j) epi(t, n0 + j, acc[j]);
      }
    }
  }
}

/**
 * The SwiGLU pair: a = x·row1(n), b = x·row3(n) for the same hidden unit n, handed together to
 * epi(t, n, a, b), so silu(a) * b needs no intermediate buffer.
 */
template <int K, typename XRow, typename WRow, typename Epi>
inline void matmul_pair(int T, XRow xrow, int N, WRow row1, WRow row3, Epi epi) {
#pragma omp parallel for schedule(static)
  for (int n0 = 0; n0 < N; n0 += 2) {
    const int nb = std::min(2, N - n0);
    const auto* p0 = row1(n0);
    const auto* p1 = row1(n0 + nb - 1);
    const auto* q0 = row3(n0);
    const auto* q1 = row3(n0 + nb - 1);
    for (int t0 = 0; t0 < T; t0 += kTokenTile) {
      const int t1 = std::min(T, t0 + kTokenTile);
      for (int t = t0; t < t1; ++t) {
        const float* __restrict x = xrow(t);
        float a0 = 0.f, a1 = 0.f, b0 = 0.f, b1 = 0.f;
#pragma omp simd reduction(+ : a0, a1, b0, b1)
        for (int k = 0; k < K; ++k) {
          const float xv = x[k];
          a0 += xv * to_f32(p0[k]);
          a1 += xv * to_f32(p1[k]);
          b0 += xv * to_f32(q0[k]);
          b1 += xv * to_f32(q1[k]);
        }
        epi(t, n0, a0, b0);
        if (nb == 2) epi(t, n0 + 1, a1, b1);
      }
    }
  }
}

/** Row n of a weight (or of this rank's slice of it), honouring the full tensor's row stride. */
template <typename W>
struct Rows {
  const W* base;
  int64_t stride;
  explicit Rows(const mc_weight& w) : base(static_cast<const W*>(w.data)), stride(w.row_stride) {}
  const W* operator()(int n) const { return base + int64_t(n) * stride; }
};

}  // namespace mc
