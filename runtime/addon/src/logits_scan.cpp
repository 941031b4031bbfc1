// What generate() does with each decode step's row of logits before it picks a token: check that
// every value is finite, then (greedy) find the largest. In JavaScript those two passes took ~115 µs
// a row of 32768 and ~440 µs of 131072 on a CI core (bench/cpu/logits-scan.ts), time the JS thread
// spends after each GPU step (4-7 ms); here two SSE2 passes (every x86-64 has it; elsewhere one
// scalar pass).
#include "logits_scan.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace {

/** The first non-finite value's index, or -1. */
int64_t firstNonFinite(const float* p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(p[i])) return static_cast<int64_t>(i);
  return -1;
}

}  // namespace

int64_t scanLogits(const float* p, size_t n) {
#if defined(__SSE2__)
  // Pass 1, eight values a step: any exponent of all ones (NaN or infinity), and the maximum.
  const __m128i exponent = _mm_set1_epi32(0x7f800000);
  __m128i bad = _mm_setzero_si128();
  __m128 m0 = _mm_set1_ps(p[0]), m1 = m0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128 a = _mm_loadu_ps(p + i), b = _mm_loadu_ps(p + i + 4);
    bad = _mm_or_si128(bad, _mm_cmpeq_epi32(_mm_and_si128(_mm_castps_si128(a), exponent), exponent));
    bad = _mm_or_si128(bad, _mm_cmpeq_epi32(_mm_and_si128(_mm_castps_si128(b), exponent), exponent));
    m0 = _mm_max_ps(m0, a), m1 = _mm_max_ps(m1, b);
  }
  bool nonFinite = _mm_movemask_epi8(bad) != 0;
  float lanes[4];
  _mm_storeu_ps(lanes, _mm_max_ps(m0, m1));
  float m = std::max(std::max(lanes[0], lanes[1]), std::max(lanes[2], lanes[3]));
  for (; i < n; ++i) {
    nonFinite = nonFinite || !std::isfinite(p[i]);
    m = p[i] > m ? p[i] : m;
  }
  if (nonFinite) return -firstNonFinite(p, n) - 1;
  // Pass 2: the first value equal to the maximum (the first of ties, as a strict > scan keeps; -0 == +0).
  const __m128 target = _mm_set1_ps(m);
  size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const int hit = _mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(p + j), target)) | (_mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(p + j + 4), target)) << 4);
    if (hit != 0) return static_cast<int64_t>(j) + __builtin_ctz(static_cast<unsigned>(hit));
  }
  for (; j < n; ++j)
    if (p[j] == m) return static_cast<int64_t>(j);
  return 0;  // not reached: the maximum is one of the values
#else
  size_t best = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(p[i])) return -static_cast<int64_t>(i) - 1;
    if (p[i] > p[best]) best = i;
  }
  return static_cast<int64_t>(best);
#endif
}

Napi::Value scanLogitsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw Napi::TypeError::New(env, "scanLogits: row must be a Float32Array");
  Napi::Float32Array row = info[0].As<Napi::Float32Array>();
  if (row.ElementLength() == 0) throw Napi::RangeError::New(env, "scanLogits: row is empty");
  return Napi::Number::New(env, static_cast<double>(scanLogits(row.Data(), row.ElementLength())));
}
