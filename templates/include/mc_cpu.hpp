// Arithmetic shared by the CPU kernels (templates/cpu/*.hpp.hbs). Not rendered: copied verbatim
// next to the generated sources, so the kernels stay thin and this file compiles on its own.
#pragma once
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <type_traits>
#if defined(__AVX512F__)
// GCC 12's AVX-512 headers start some intrinsics from a self-initialised "undefined" register, which
// -Wmaybe-uninitialized reports wherever they are inlined; the warning is about the header, not us.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

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
// y[t][n] = sum_k x(t)[k] * row(n)[k] for t < T, n < N: xrow(t) gives token t's input row (float),
// wrow(n) weight row n (W); each result goes to the epilogue epi(t, n, y) exactly once.
//
// Both products run on "units": RPU weight rows whose results for a token go to one epilogue call —
// one row for matmul, the w1 and w3 rows of one hidden unit for matmul_pair. Blocks of consecutive
// units are streamed together.
//
// Two regimes (AVX-512 builds; other CPUs take the portable loops below):
//  - decode, T < kGemmMinTokens: memory bound, every weight byte is read once per call, so each
//    thread streams ranges of rows, kGemvRows at a time (gemv_units, dot_rows), in guided chunks
//    so that neither thread waits for the other at the end, prefetching the next block into L2;
//  - prefill: compute bound, so x is packed once into tiles of up to 48 tokens laid out [k][token]
//    and a register-blocked micro-kernel (8 weight rows × 48 tokens = 24 zmm accumulators)
//    broadcasts one weight and multiplies it into 16 tokens per instruction (gemm_units). A row
//    block stays in L1/L2 while every token tile passes it, so weights are read from memory once.
//    bf16 weights use the CPU's bf16 dot product (AVX512_BF16) on x rounded to bf16 when packed.

/** Portable loops: any CPU; also the fallback when the packing buffer cannot be allocated. */
namespace portable {
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
}  // namespace portable

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define MC_AVX512 1
namespace avx512 {
/** 16 weights widened to float32 (bf16: exactly, by a shift; f16: by the hardware conversion). */
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const bf16* p) {
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
inline __m512 load16(const f16* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
inline __m512 load16(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 load16(const bf16* p, __mmask16 m) {
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
inline __m512 load16(const f16* p, __mmask16 m) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p)); }

// ---- decode: row streaming --------------------------------------------------------------------
/** One packing buffer per calling thread (a TP rank runs its forward on a thread of its own). */
inline void* scratch(size_t bytes) {
  struct Buffer {
    void* data = nullptr;
    size_t size = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buf;
  if (buf.size < bytes) {
    std::free(buf.data);
    buf.size = (bytes + 4095) / 4096 * 4096;
    buf.data = std::aligned_alloc(64, buf.size);
    if (buf.data == nullptr) buf.size = 0;
  }
  return buf.data;
}

constexpr int kGemmMinTokens = 4;  // below this many tokens the weights' bytes, not FLOPs, set the time

/**
 * out[r] = x · rows[r] for R rows read in lockstep, 16 elements of each per step; each weight element
 * is loaded once. When the rows share their offset within a cache line (a safetensors tensor starts at
 * any byte; rows of K floats keep the offset when K is a multiple of 16), a masked first step brings
 * the loads onto line boundaries: a 64-byte load across two lines costs ~15% of decode in f32.
 */
template <int K, int R, typename W>
inline void dot_rows_lockstep(const float* __restrict x, const W* const* rows, float* out, const W* const* next = nullptr /*rows to prefetch*/) {
  __m512 acc[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  const uintptr_t line_offset = reinterpret_cast<uintptr_t>(rows[0]) & 63;
  bool shared = line_offset % sizeof(W) == 0;
  for (int r = 1; r < R; ++r) shared &= (reinterpret_cast<uintptr_t>(rows[r]) & 63) == line_offset;
  int k = 0;
  if (shared && line_offset != 0 && 16 * sizeof(W) == 64) {
    const int head = std::min<int>(K, int((64 - line_offset) / sizeof(W)));
    const __mmask16 m = __mmask16((1u << head) - 1);
    const __m512 xv = _mm512_maskz_loadu_ps(m, x);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(load16(rows[r], m), xv, acc[r]);
    k = head;
  }
  for (; k + 16 <= K; k += 16) {
    const __m512 xv = _mm512_loadu_ps(x + k);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      if (next != nullptr) _mm_prefetch(reinterpret_cast<const char*>(next[r] + k), _MM_HINT_T1);
      acc[r] = _mm512_fmadd_ps(load16(rows[r] + k), xv, acc[r]);
    }
  }
  if (k < K) {
    const __mmask16 m = __mmask16((1u << (K - k)) - 1);
    const __m512 xv = _mm512_maskz_loadu_ps(m, x + k);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(load16(rows[r] + k, m), xv, acc[r]);
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) out[r] = _mm512_reduce_add_ps(acc[r]);
}

/** out[r] = x · rows[r], one row after the other, 8 accumulators (128 elements) per step: one sequential stream (f16, and bf16 without scratch). */
template <int K, int R, typename W>
inline void dot_rows_sequential(const float* __restrict x, const W* const* rows, float* out, const W* const* next = nullptr) {
  static_assert(sizeof(W) == 2, "16-bit rows: 32 elements a 64-byte line, one prefetch every other step");
  constexpr int A = 8, KA = K / (16 * A) * (16 * A), KV = K / 16 * 16;
  for (int r = 0; r < R; ++r) {
    const W* __restrict w = rows[r];
    __m512 acc[A];
#pragma GCC unroll 8
    for (int a = 0; a < A; ++a) acc[a] = _mm512_setzero_ps();
    for (int k = 0; k < KA; k += 16 * A)
#pragma GCC unroll 8
      for (int a = 0; a < A; ++a) {
        if (next != nullptr && a % 2 == 0) _mm_prefetch(reinterpret_cast<const char*>(next[r] + k + 16 * a), _MM_HINT_T1);
        acc[a] = _mm512_fmadd_ps(load16(w + k + 16 * a), _mm512_loadu_ps(x + k + 16 * a), acc[a]);
      }
    for (int k = KA; k < KV; k += 16) acc[0] = _mm512_fmadd_ps(load16(w + k), _mm512_loadu_ps(x + k), acc[0]);
    if constexpr (K % 16 != 0) {
      const __mmask16 m = __mmask16((1u << (K % 16)) - 1);
      acc[1] = _mm512_fmadd_ps(load16(w + KV, m), _mm512_maskz_loadu_ps(m, x + KV), acc[1]);
    }
#pragma GCC unroll 8
    for (int a = 1; a < A; ++a) acc[0] = _mm512_add_ps(acc[0], acc[a]);
    out[r] = _mm512_reduce_add_ps(acc[0]);
  }
}

/**
 * Decode reads each weight once, so the order of reads is what counts. float32 rows go 16 in lockstep
 * (16 streams of whole cache lines: as fast as the bandwidth test's single stream, ~47 GB/s in the
 * machine's fast phases); 16-bit rows go one after the other (one stream). bf16 takes dot_rows_bf16.
 */
template <int K, int R, typename W>
inline void dot_rows(const float* __restrict x, const W* const* rows, float* out, const W* const* next = nullptr) {
  if constexpr (sizeof(W) == 2) dot_rows_sequential<K, R>(x, rows, out, next);
  else dot_rows_lockstep<K, R>(x, rows, out, next);
}

/** x split into its even and odd elements, [2][K2] (K2 = K/2 rounded up to 16, zero padded). */
template <int K>
struct EvenOdd {
  static constexpr int K2 = ((K + 1) / 2 + 15) / 16 * 16;
  static void split(const float* x, float* out) {
    for (int i = 0; i < K2; ++i) {
      out[i] = 2 * i < K ? x[2 * i] : 0.f;
      out[K2 + i] = 2 * i + 1 < K ? x[2 * i + 1] : 0.f;
    }
  }
};

/**
 * bf16 rows one after the other, 32 elements (one 64-byte line) per load: the even elements come out
 * as float32 by a shift, the odd ones by a mask, against x split into its even and odd elements
 * (EvenOdd), 8 accumulators. In the machine's fast-memory phases this streamed ~15% faster than
 * widening 16 elements per load (vpmovzxwd + shift): 43-50 vs 37-40 GB/s (bench/RESULTS.md, CPU).
 */
template <int K, int R>
inline void dot_rows_bf16(const float* __restrict xd /*[2][K2]: even, odd*/, const bf16* const* rows, float* out,
                          const bf16* const* next = nullptr /*rows to prefetch*/) {
  constexpr int K2 = EvenOdd<K>::K2, A = 4, KA = K / (32 * A) * (32 * A), KF = K / 32 * 32;
  const __m512i hi_mask = _mm512_set1_epi32(int(0xffff0000u));
  const auto even = [](__m512i v) { return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)); };
  const auto odd = [&](__m512i v) { return _mm512_castsi512_ps(_mm512_and_si512(v, hi_mask)); };
  for (int r = 0; r < R; ++r) {
    const bf16* __restrict w = rows[r];
    __m512 acc[2 * A];
#pragma GCC unroll 8
    for (int a = 0; a < 2 * A; ++a) acc[a] = _mm512_setzero_ps();
    int k = 0;
    for (; k < KA; k += 32 * A)
#pragma GCC unroll 4
      for (int a = 0; a < A; ++a) {
        if (next != nullptr) _mm_prefetch(reinterpret_cast<const char*>(next[r] + k + 32 * a), _MM_HINT_T1);
        const __m512i v = _mm512_loadu_si512(w + k + 32 * a);
        acc[2 * a] = _mm512_fmadd_ps(even(v), _mm512_load_ps(xd + (k + 32 * a) / 2), acc[2 * a]);
        acc[2 * a + 1] = _mm512_fmadd_ps(odd(v), _mm512_load_ps(xd + K2 + (k + 32 * a) / 2), acc[2 * a + 1]);
      }
    for (; k < KF; k += 32) {
      const __m512i v = _mm512_loadu_si512(w + k);
      acc[0] = _mm512_fmadd_ps(even(v), _mm512_load_ps(xd + k / 2), acc[0]);
      acc[1] = _mm512_fmadd_ps(odd(v), _mm512_load_ps(xd + K2 + k / 2), acc[1]);
    }
    if constexpr (K % 32 != 0) {  // the last K % 32 elements; x's padding is zero
      const __m512i v = _mm512_maskz_loadu_epi16(__mmask32((1ull << (K - KF)) - 1), w + k);
      acc[0] = _mm512_fmadd_ps(even(v), _mm512_load_ps(xd + k / 2), acc[0]);
      acc[1] = _mm512_fmadd_ps(odd(v), _mm512_load_ps(xd + K2 + k / 2), acc[1]);
    }
#pragma GCC unroll 8
    for (int a = 1; a < 2 * A; ++a) acc[0] = _mm512_add_ps(acc[0], acc[a]);
    out[r] = _mm512_reduce_add_ps(acc[0]);
  }
}

template <int K, int U, int RPU, typename W, typename XRow, typename UnitRows, typename UnitEpi>
inline void gemv_units(int T, XRow xrow, int N, UnitRows unit_rows, UnitEpi unit_epi) {
  constexpr int R = U * RPU;
  float* xd = nullptr;  // bf16: each token's x split even/odd, [T][2][K2]
  if constexpr (std::is_same_v<W, bf16>) {
    xd = static_cast<float*>(scratch(sizeof(float) * 2 * EvenOdd<K>::K2 * T));
    if (xd != nullptr)
      for (int t = 0; t < T; ++t) EvenOdd<K>::split(xrow(t), xd + int64_t(t) * 2 * EvenOdd<K>::K2);
  }
  // A block of U units is R = U * RPU rows, unit u's j-th row at index j * U + u. guided: big
  // first chunks keep each thread's rows streaming in memory order; the small last ones go to
  // whichever thread is free, so no thread waits at the barrier for another's share
  // (bench/RESULTS.md, change 11). While a block is multiplied, the rows of the next block (the
  // thread's next one, unless its chunk ends) are prefetched into L2, a line per line read: a row
  // of a few KB is too short for the hardware prefetcher to ramp up on, and a 4 KiB page boundary
  // stops it (change 12: f32 decode +21%, bf16 +8%).
#pragma omp parallel for schedule(guided)
  for (int n0 = 0; n0 < N; n0 += U) {
    const W* rows[R];
    const W* next[R];
    const W* one[RPU];
    for (int u = 0; u < U; ++u) {
      unit_rows(std::min(n0 + u, N - 1), one);  // a short tail block repeats its last unit
      for (int j = 0; j < RPU; ++j) rows[j * U + u] = one[j];
      unit_rows(std::min(n0 + U + u, N - 1), one);  // past the end: the last unit again (already read)
      for (int j = 0; j < RPU; ++j) next[j * U + u] = one[j];
    }
    const int nu = std::min(U, N - n0);
    for (int t = 0; t < T; ++t) {  // T > 1: the block's rows are still in L1/L2 for the next token
      const W* const* ahead = t == 0 ? next : nullptr;
      float v[R];
      if constexpr (std::is_same_v<W, bf16>) {
        if (xd != nullptr) dot_rows_bf16<K, R>(xd + int64_t(t) * 2 * EvenOdd<K>::K2, rows, v, ahead);
        else dot_rows<K, R>(xrow(t), rows, v, ahead);
      } else {
        dot_rows<K, R>(xrow(t), rows, v, ahead);
      }
      for (int u = 0; u < nu; ++u) unit_epi(t, n0 + u, v + u, U);
    }
  }
}

// ---- prefill: packed x, register-blocked micro-kernel -------------------------------------------
constexpr int kGemvRows = 16;  // decode: weight rows per block (16 accumulators + x: no register spills; 32 spilled)
constexpr int kGemmRows = 8;   // weight rows per block: 8 broadcasts per k feed 24 FMAs (8 × 3 token vectors)
constexpr int kMaxTokenVecs = 3;  // 8 × 3 = 24 accumulators + 3 x vectors + 1 broadcast ≤ 32 zmm registers

#if defined(__AVX512BF16__)
template <typename W> constexpr bool kBf16Dot = std::is_same_v<W, bf16>;
#else
template <typename W> constexpr bool kBf16Dot = false;
#endif

/**
 * How x is packed for weights of type W: float32 [k][token], or for the bf16 dot product, bf16 pairs
 * [k / 2][token][2] (the pair (x[k], x[k+1]) of a token is one 32-bit lane of vdpbf16ps).
 */
template <int K, typename W>
struct Packing {
  static constexpr bool bf16_dot = kBf16Dot<W>;
  static constexpr int KSTEPS = bf16_dot ? (K + 1) / 2 : K;  // packed rows per tile
  using Elem = std::conditional_t<bf16_dot, uint32_t, float>;  // one lane: a float or a bf16 pair
  /** Packs tokens t0 .. t0 + n of x into a tile of TW tokens (zeros past n). */
  template <typename XRow>
  static void pack(XRow xrow, int t0, int n, int TW, Elem* __restrict tile) {
    for (int j = 0; j < TW; ++j) {
      if (j >= n) {
        for (int s = 0; s < KSTEPS; ++s) tile[int64_t(s) * TW + j] = 0;
        continue;
      }
      const float* __restrict x = xrow(t0 + j);
      if constexpr (bf16_dot) {
        for (int s = 0; s < K / 2; ++s)
          tile[int64_t(s) * TW + j] = uint32_t(from_f32<bf16>(x[2 * s]).bits) | uint32_t(from_f32<bf16>(x[2 * s + 1]).bits) << 16;
        if constexpr (K % 2 != 0) tile[int64_t(K / 2) * TW + j] = from_f32<bf16>(x[K - 1]).bits;  // (x[K-1], 0)
      } else {
        for (int k = 0; k < K; ++k) tile[int64_t(k) * TW + j] = x[k];
      }
    }
  }
};

/** acc[r][v] (16 tokens each) = tile · rows[r] over all of K; results stored to out[r * 16V + token]. */
template <int K, int R, int V, typename W>
inline void micro_kernel(const typename Packing<K, W>::Elem* __restrict tile, const W* const* rows, float* __restrict out) {
  constexpr int TW = 16 * V;
  __m512 acc[R][V];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  if constexpr (Packing<K, W>::bf16_dot) {
#if defined(__AVX512BF16__)
    const uint32_t* __restrict xp = tile;
    for (int s = 0; s < K / 2; ++s, xp += TW) {
      __m512bh xv[V];
#pragma GCC unroll 3
      for (int v = 0; v < V; ++v) xv[v] = (__m512bh)_mm512_loadu_si512(xp + 16 * v);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        uint32_t pair;
        std::memcpy(&pair, rows[r] + 2 * s, 4);  // (w[k], w[k+1]): one 32-bit broadcast
        const __m512bh wv = (__m512bh)_mm512_set1_epi32(int(pair));
#pragma GCC unroll 3
        for (int v = 0; v < V; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], xv[v], wv);
      }
    }
    if constexpr (K % 2 != 0) {  // last k alone: (w[K-1], 0), never reading past the row
      __m512bh xv[V];
      for (int v = 0; v < V; ++v) xv[v] = (__m512bh)_mm512_loadu_si512(xp + 16 * v);
      for (int r = 0; r < R; ++r) {
        const __m512bh wv = (__m512bh)_mm512_set1_epi32(int(rows[r][K - 1].bits));
        for (int v = 0; v < V; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], xv[v], wv);
      }
    }
#endif
  } else {
    const float* __restrict xp = tile;
    for (int k = 0; k < K; ++k, xp += TW) {
      __m512 xv[V];
#pragma GCC unroll 3
      for (int v = 0; v < V; ++v) xv[v] = _mm512_loadu_ps(xp + 16 * v);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m512 wv = _mm512_set1_ps(to_f32(rows[r][k]));
#pragma GCC unroll 3
        for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(wv, xv[v], acc[r][v]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) _mm512_storeu_ps(out + r * TW + 16 * v, acc[r][v]);
}

/** Packs x into tiles (threads split the tiles), then threads split the blocks of units. False: no buffer. */
template <int K, int U, int RPU, int V, typename W, typename XRow, typename UnitRows, typename UnitEpi>
inline bool gemm_units(int T, XRow xrow, int N, UnitRows unit_rows, UnitEpi unit_epi) {
  using P = Packing<K, W>;
  constexpr int R = U * RPU, TW = 16 * V;
  const int n_tiles = (T + TW - 1) / TW;
  const int64_t tile_elems = int64_t(P::KSTEPS) * TW;
  auto* packed = static_cast<typename P::Elem*>(scratch(size_t(n_tiles * tile_elems) * sizeof(typename P::Elem)));
  if (packed == nullptr) return false;
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int i = 0; i < n_tiles; ++i) P::pack(xrow, i * TW, std::min(TW, T - i * TW), TW, packed + i * tile_elems);
    alignas(64) float out[R * TW];
#pragma omp for schedule(static)
    for (int n0 = 0; n0 < N; n0 += U) {
      const W* rows[R];
      const W* one[RPU];
      for (int u = 0; u < U; ++u) {
        unit_rows(std::min(n0 + u, N - 1), one);
        for (int j = 0; j < RPU; ++j) rows[j * U + u] = one[j];
      }
      const int nu = std::min(U, N - n0);
      for (int i = 0; i < n_tiles; ++i) {
        micro_kernel<K, R, V, W>(packed + i * tile_elems, rows, out);
        const int n = std::min(TW, T - i * TW);
        for (int u = 0; u < nu; ++u)
          for (int j = 0; j < n; ++j) unit_epi(i * TW + j, n0 + u, out + u * TW + j, U * TW);
      }
    }
  }
  return true;
}

/**
 * y for every token and unit (a unit: RPU weight rows whose results go to one epilogue call),
 * decode or prefill by token count; prefill tiles of 16, 32 or 48 tokens so a short T wastes little.
 */
template <int K, int RPU, typename W, typename XRow, typename UnitRows, typename UnitEpi>
inline bool units(int T, XRow xrow, int N, UnitRows unit_rows, UnitEpi unit_epi) {
  constexpr int UG = kGemmRows / RPU;
  if (T < kGemmMinTokens) return gemv_units<K, kGemvRows / RPU, RPU, W>(T, xrow, N, unit_rows, unit_epi), true;
  if (T <= 16) return gemm_units<K, UG, RPU, 1, W>(T, xrow, N, unit_rows, unit_epi);
  if (T <= 32) return gemm_units<K, UG, RPU, 2, W>(T, xrow, N, unit_rows, unit_epi);
  return gemm_units<K, UG, RPU, kMaxTokenVecs, W>(T, xrow, N, unit_rows, unit_epi);
}
}  // namespace avx512
#endif

template <int K, typename XRow, typename WRow, typename Epi>
inline void matmul(int T, XRow xrow, int N, WRow wrow, Epi epi) {
#if defined(MC_AVX512)
  using W = std::remove_cv_t<std::remove_pointer_t<decltype(wrow(0))>>;
  const bool done = avx512::units<K, 1, W>(
      T, xrow, N, [&](int n, const W** rows) { rows[0] = wrow(n); }, [&](int t, int n, const float* v, int) { epi(t, n, v[0]); });
  if (done) return;
#endif
  portable::matmul<K>(T, xrow, N, wrow, epi);
}

/**
 * The SwiGLU pair: a = x·row1(n), b = x·row3(n) for the same hidden unit n, handed together to
 * epi(t, n, a, b), so silu(a) * b needs no intermediate buffer.
 */
template <int K, typename XRow, typename WRow, typename Epi>
inline void matmul_pair(int T, XRow xrow, int N, WRow row1, WRow row3, Epi epi) {
#if defined(MC_AVX512)
  using W = std::remove_cv_t<std::remove_pointer_t<decltype(row1(0))>>;
  const bool done = avx512::units<K, 2, W>(
      T, xrow, N, [&](int n, const W** rows) { rows[0] = row1(n), rows[1] = row3(n); },
      [&](int t, int n, const float* v, int stride) { epi(t, n, v[0], v[stride]); });
  if (done) return;
#endif
  portable::matmul_pair<K>(T, xrow, N, row1, row3, epi);
}

// ---- attention ---------------------------------------------------------------------------------
/**
 * Key cache layout, per KV head: slots in blocks of 16, each block stored transposed [d][16], so that
 * one vector load gives dimension d of 16 consecutive keys and scores come 16 keys per instruction.
 * A ring whose length is not a multiple of 16 ends in a narrower block [d][width]. Values keep the
 * natural [slot][N_KV_HEADS * HEAD_DIM] layout: P·V reads whole value rows.
 */
template <int HEAD_DIM, int KV_SLOTS>
struct KeyBlocks {
  static constexpr int kWidth = 16;
  static constexpr int width(int block_start) { return std::min(kWidth, KV_SLOTS - block_start); }
  /** First element of the block starting at slot `block_start` (a multiple of 16) of head g. */
  static constexpr int64_t block(int g, int block_start) { return (int64_t(g) * KV_SLOTS + block_start) * HEAD_DIM; }
  static constexpr int64_t index(int g, int slot, int d) {
    const int b = slot / kWidth * kWidth;
    return block(g, b) + int64_t(d) * width(b) + (slot - b);
  }
};

#if defined(MC_AVX512)
namespace avx512 {
/** e^x for 16 lanes (x ≤ 88): 2^n · p(r), r = x − n·ln2 in [−ln2/2, ln2/2], p the degree-7 Taylor series (error < 1e-8). */
inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-104.f));  // e^-104 is 0 in float: scalef underflows to 0 below
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);  // ln2 split: the high part is exact in n·hi
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860682030941723e-6f), r);
  __m512 p = _mm512_set1_ps(1.f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);
}

/**
 * Attention of a tile of queries (TQ tokens × GROUP heads of one KV head = M rows) over the keys
 * the tile sees, 16 keys at a time, with an online softmax (running max and sum per row), so the
 * keys and values of the KV head are read once per tile and no score matrix is stored.
 */
template <int HEAD_DIM, int GROUP, int N_KV_HEADS, int WINDOW, int KV_SLOTS, int TQ, typename KV>
inline void attention_tile(const float* q /*[T, N_KV_HEADS * GROUP * HEAD_DIM]*/, int t0, int tn, const int32_t* positions,
                           int g, const KV* k_cache, const KV* v_cache, float* out) {
  constexpr int D = HEAD_DIM, DV = D / 16, M_MAX = TQ * GROUP, Q_STRIDE = N_KV_HEADS * GROUP * D, KV_DIM = N_KV_HEADS * D;
  constexpr int RB = std::max(1, std::min(8, 16 / DV));  // rows per P·V step: RB × DV accumulators ≤ 16 registers
  using Keys = KeyBlocks<D, KV_SLOTS>;
  const int M = tn * GROUP;  // row m = token (t0 + m / GROUP), head g * GROUP + m % GROUP
  alignas(64) float qs[M_MAX][D];
  alignas(64) float o[M_MAX][D];
  alignas(64) float pr[M_MAX][16];
  float mx[M_MAX], sum[M_MAX];
  int32_t pos[M_MAX];
  const float scale = 1.0f / std::sqrt(float(D));
  for (int m = 0; m < M; ++m) {
    const float* src = q + int64_t(t0 + m / GROUP) * Q_STRIDE + (g * GROUP + m % GROUP) * D;
    for (int d = 0; d < D; ++d) qs[m][d] = src[d] * scale, o[m][d] = 0.f;
    mx[m] = -INFINITY, sum[m] = 0.f, pos[m] = positions[t0 + m / GROUP];
  }
  const int32_t first = WINDOW > 0 ? std::max<int32_t>(0, positions[t0] - WINDOW + 1) : 0;
  const int32_t last = positions[t0 + tn - 1];
  for (int32_t c = first; c <= last;) {
    // One chunk: consecutive positions whose slots lie in one block and do not wrap around the ring.
    const int s = c % KV_SLOTS, sb = s / 16 * 16, width = Keys::width(sb);
    const int lane0 = s - sb, len = std::min<int32_t>(sb + width - s, last - c + 1), lane1 = lane0 + len;
    const int32_t pos0 = c - lane0;  // position held by lane 0 of the block
    const __mmask16 in_chunk = __mmask16(((1u << lane1) - 1) & ~((1u << lane0) - 1));
    const __mmask16 in_block = __mmask16((1u << width) - 1);
    const KV* kt = k_cache + Keys::block(g, sb);
    const __m512i lane_pos = _mm512_add_epi32(_mm512_set1_epi32(pos0), _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    // Scores, 4 rows at a time against the 16 keys of the block. Rows past M repeat the last row (their
    // results are never used), so every loop has a constant trip count and the accumulators stay in registers.
    for (int m0 = 0; m0 < M; m0 += 4) {
      const int mb = std::min(4, M - m0);
      const float* q0 = qs[m0];
      const float* q1 = qs[m0 + std::min(1, mb - 1)];
      const float* q2 = qs[m0 + std::min(2, mb - 1)];
      const float* q3 = qs[m0 + std::min(3, mb - 1)];
      __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
#pragma GCC unroll 4
      for (int d = 0; d < D; ++d) {
        const __m512 kv = load16(kt + d * width, in_block);
        a0 = _mm512_fmadd_ps(_mm512_set1_ps(q0[d]), kv, a0);
        a1 = _mm512_fmadd_ps(_mm512_set1_ps(q1[d]), kv, a1);
        a2 = _mm512_fmadd_ps(_mm512_set1_ps(q2[d]), kv, a2);
        a3 = _mm512_fmadd_ps(_mm512_set1_ps(q3[d]), kv, a3);
      }
      const __m512 acc[4] = {a0, a1, a2, a3};
      for (int i = 0; i < mb; ++i) {
        const int m = m0 + i;
        // Causal and window mask: key position in [pos - WINDOW + 1, pos].
        __mmask16 ok = in_chunk & _mm512_cmple_epi32_mask(lane_pos, _mm512_set1_epi32(pos[m]));
        if constexpr (WINDOW > 0) ok &= _mm512_cmpge_epi32_mask(lane_pos, _mm512_set1_epi32(pos[m] - WINDOW + 1));
        if (ok == 0) {
          _mm512_store_ps(pr[m], _mm512_setzero_ps());
          continue;
        }
        const float cmax = _mm512_mask_reduce_max_ps(ok, acc[i]);
        const float nmax = std::max(mx[m], cmax);
        const float f = std::exp(mx[m] - nmax);  // rescales what was summed under the old max (0 on the first chunk)
        const __m512 p = _mm512_maskz_mov_ps(ok, exp16(_mm512_sub_ps(acc[i], _mm512_set1_ps(nmax))));
        sum[m] = sum[m] * f + _mm512_reduce_add_ps(p);
        mx[m] = nmax;
        _mm512_store_ps(pr[m], p);
        if (f != 1.f)
          for (int v = 0; v < DV; ++v) _mm512_store_ps(o[m] + 16 * v, _mm512_mul_ps(_mm512_load_ps(o[m] + 16 * v), _mm512_set1_ps(f)));
      }
    }
    // o += p · V over the chunk's keys, RB rows at a time so each value row is loaded once per RB rows.
    for (int m0 = 0; m0 < M; m0 += RB) {
      const int mb = std::min(RB, M - m0);
      __m512 acc[RB][DV];
      for (int i = 0; i < RB; ++i)
        for (int v = 0; v < DV; ++v) acc[i][v] = _mm512_load_ps(o[m0 + std::min(i, mb - 1)] + 16 * v);
      for (int lane = lane0; lane < lane1; ++lane) {
        const KV* vrow = v_cache + int64_t(sb + lane) * KV_DIM + g * D;
        __m512 vv[DV];
        for (int v = 0; v < DV; ++v) vv[v] = load16(vrow + 16 * v);
        for (int i = 0; i < RB; ++i) {
          const __m512 pw = _mm512_set1_ps(pr[m0 + std::min(i, mb - 1)][lane]);
          for (int v = 0; v < DV; ++v) acc[i][v] = _mm512_fmadd_ps(pw, vv[v], acc[i][v]);
        }
      }
      for (int i = 0; i < RB; ++i)  // rows past M rewrite the last row with the very same values
        for (int v = 0; v < DV; ++v) _mm512_store_ps(o[m0 + std::min(i, mb - 1)] + 16 * v, acc[i][v]);
    }
    c += len;
  }
  for (int m = 0; m < M; ++m) {
    float* dst = out + int64_t(t0 + m / GROUP) * Q_STRIDE + (g * GROUP + m % GROUP) * D;
    const float inv = 1.0f / sum[m];
    for (int d = 0; d < D; ++d) dst[d] = o[m][d] * inv;
  }
}
}  // namespace avx512
#endif

/**
 * Causal attention of T queries at consecutive `positions` over a layer's cache (keys in KeyBlocks
 * layout), with sliding window WINDOW (0 = full): a query at p sees keys [p - WINDOW + 1, p]. Each
 * KV head's keys and values are read once per tile of queries for all GROUP heads that share it.
 * scratch: [threads][GROUP][KV_SLOTS] floats, used by the portable path only.
 */
template <int HEAD_DIM, int GROUP, int N_KV_HEADS, int WINDOW, int KV_SLOTS, typename KV>
inline void attention(const float* q /*[T, N_KV_HEADS * GROUP * HEAD_DIM]*/, int T, const int32_t* positions /*[T]*/,
                      const KV* k_cache, const KV* v_cache /*[KV_SLOTS, N_KV_HEADS * HEAD_DIM]*/, float* out, float* scratch) {
#if defined(MC_AVX512)
  if constexpr (HEAD_DIM % 16 == 0) {
    constexpr int TQ = std::max(1, 64 / GROUP);  // query tokens per tile: up to 64 rows of state per task
    const int tiles = (T + TQ - 1) / TQ;
    (void)scratch;
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int i = 0; i < tiles; ++i)
      for (int g = 0; g < N_KV_HEADS; ++g)
        avx512::attention_tile<HEAD_DIM, GROUP, N_KV_HEADS, WINDOW, KV_SLOTS, TQ>(q, i * TQ, std::min(TQ, T - i * TQ), positions, g, k_cache,
                                                                                  v_cache, out);
    return;
  }
#endif
  constexpr int Q_STRIDE = N_KV_HEADS * GROUP * HEAD_DIM, KV_DIM = N_KV_HEADS * HEAD_DIM;
  using Keys = KeyBlocks<HEAD_DIM, KV_SLOTS>;
  const float scale = 1.0f / std::sqrt(float(HEAD_DIM));
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
  for (int t = 0; t < T; ++t) {
    for (int g = 0; g < N_KV_HEADS; ++g) {
      float* scores = scratch + int64_t(omp_get_thread_num()) * GROUP * KV_SLOTS;
      const int32_t p = positions[t];
      const int32_t lo = WINDOW > 0 ? std::max<int32_t>(0, p - WINDOW + 1) : 0;
      const int n = p - lo + 1;  // keys visible to this query; at most KV_SLOTS by construction
      const float* qg = q + int64_t(t) * Q_STRIDE + g * GROUP * HEAD_DIM;
      float maxs[GROUP];
      std::fill(maxs, maxs + GROUP, -INFINITY);
      for (int j = 0; j < n; ++j) {
        const int slot = (lo + j) % KV_SLOTS;
        float kf[HEAD_DIM];
        for (int d = 0; d < HEAD_DIM; ++d) kf[d] = to_f32(k_cache[Keys::index(g, slot, d)]);
        for (int h = 0; h < GROUP; ++h) {
          const float s = dot<HEAD_DIM>(qg + h * HEAD_DIM, kf) * scale;
          scores[h * KV_SLOTS + j] = s;
          maxs[h] = std::max(maxs[h], s);
        }
      }
      float sums[GROUP];
      for (int h = 0; h < GROUP; ++h) {
        float sum = 0.f;
        for (int j = 0; j < n; ++j) sum += (scores[h * KV_SLOTS + j] = std::exp(scores[h * KV_SLOTS + j] - maxs[h]));
        sums[h] = sum;
      }
      float acc[GROUP][HEAD_DIM] = {};
      for (int j = 0; j < n; ++j) {
        const KV* val = v_cache + int64_t((lo + j) % KV_SLOTS) * KV_DIM + g * HEAD_DIM;
        float vf[HEAD_DIM];
        for (int d = 0; d < HEAD_DIM; ++d) vf[d] = to_f32(val[d]);
        for (int h = 0; h < GROUP; ++h) {
          const float w = scores[h * KV_SLOTS + j];
#pragma omp simd
          for (int d = 0; d < HEAD_DIM; ++d) acc[h][d] += w * vf[d];
        }
      }
      for (int h = 0; h < GROUP; ++h) {
        float* o = out + int64_t(t) * Q_STRIDE + (g * GROUP + h) * HEAD_DIM;
        for (int d = 0; d < HEAD_DIM; ++d) o[d] = acc[h][d] / sums[h];
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
