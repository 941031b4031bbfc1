// The CUDA kernels' basic arithmetic: element types and their 16-byte packs, warp and block
// reductions, the block-level row loaders (RMSNorm in front of a projection) and RoPE's angles.
// Part of mc_cuda.cuh (include that); not rendered, copied next to the generated sources.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "mc_abi.h"
#include "mc_ptx.cuh"  // the inline PTX (load_stream, cp.async, mma.sync, ldmatrix, wgmma)

namespace mc {

using bf16 = __nv_bfloat16;
using f16 = __half;

// ---- element types ------------------------------------------------------------------------------
// Weights and the KV cache keep the checkpoint's dtype; arithmetic is float32 everywhere.
__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(f16 x) { return __half2float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_f32<bf16>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ f16 from_f32<f16>(float x) { return __float2half_rn(x); }

/** Whether prefill GEMMs of this weight type run on tensor cores (f32 weights stay on the exact path). */
template <typename W> constexpr bool kTensorCores = !std::is_same<W, float>::value;

/**
 * Shared memory one block may use: what sm_80 allows after opting in (sm_90 allows 227 KB). The
 * plan refuses a model whose kernels would need more (compiler/plan/cuda-limits.ts); the kernels
 * static_assert it too, so that a drift between the two fails the build, not a launch.
 */
constexpr size_t kMaxSmemBytes = 163 * 1024;
/** What sm_90 allows a block after opting in: kernels that run only there (thread-block clusters) may use up to this. */
constexpr size_t kMaxSmemBytesSm90 = 227 * 1024;

/** Elements of W in one 16-byte load. */
template <typename W> constexpr int kVec = 16 / int(sizeof(W));

/** The kVec<W> elements of a 16-byte chunk, widened to float. */
template <typename W> __device__ __forceinline__ void unpack(const uint4& v, float* out);
template <> __device__ __forceinline__ void unpack<float>(const uint4& v, float* out) {
  out[0] = __uint_as_float(v.x), out[1] = __uint_as_float(v.y), out[2] = __uint_as_float(v.z), out[3] = __uint_as_float(v.w);
}
template <> __device__ __forceinline__ void unpack<bf16>(const uint4& v, float* out) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) out[2 * i] = __uint_as_float(w[i] << 16), out[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
}
template <> __device__ __forceinline__ void unpack<f16>(const uint4& v, float* out) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&w[i]));
    out[2 * i] = f.x, out[2 * i + 1] = f.y;
  }
}

/** Two floats narrowed to two 16-bit values in one register (half an mma operand fragment), the first in the low half. */
template <typename W> __device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <> __device__ __forceinline__ uint32_t pack2<bf16>(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}
template <> __device__ __forceinline__ uint32_t pack2<f16>(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}
/** Four floats narrowed to four 16-bit values (an mma operand fragment), low element first. */
template <typename W> __device__ __forceinline__ uint2 pack4(float4 v) { return make_uint2(pack2<W>(v.x, v.y), pack2<W>(v.z, v.w)); }

__device__ __forceinline__ float4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }
template <typename W> __device__ __forceinline__ float4 load4(const W* p) {
  return make_float4(to_f32(p[0]), to_f32(p[1]), to_f32(p[2]), to_f32(p[3]));
}
__device__ __forceinline__ float4 mul4(float4 a, float4 b) { return make_float4(a.x * b.x, a.y * b.y, a.z * b.z, a.w * b.w); }
__device__ __forceinline__ float4 scale4(float4 a, float s) { return make_float4(a.x * s, a.y * s, a.z * s, a.w * s); }

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

// ---- reductions -----------------------------------------------------------------------------------
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
/**
 * block_sum's static shared memory, a float a warp: counted with every kernel's dynamic shared memory
 * against a block's limit (model.cu's kernels_smem, compiler/plan/cuda-limits.ts BLOCK_SUM_SMEM_BYTES).
 */
constexpr size_t kBlockSumSmemBytes = 32 * sizeof(float);
/** Sum over the block (every thread gets it). Every thread of the block must call it. */
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float partial[kBlockSumSmemBytes / sizeof(float)];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();  // partial[] may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  float total = 0.f;
  for (int w = 0; w < warps; ++w) total += partial[w];
  return total;
}

// ---- block-level row loaders (the "x" of a GEMV, staged in shared memory as f32) ------------------
// Each thread moves the float4s i = threadIdx.x * 4 + j * blockDim.x * 4 in batches of kRowBatch whose
// loads are all issued before the first is used. A loop of one load an iteration (blockDim.x is not a
// constant, so it was not unrolled into one block of loads) waited for one L2 or HBM round trip per
// float4 in turn: 4 a 4096-wide row at 256 threads, 8 for an RMSNorm (x, then its weights), 14 for
// Mixtral's w2 copying two rows of 14336 (bench/RESULTS.md run 25). Loads past the row re-read its last
// float4 (never stored or summed), so that a batch has no branch between its loads.

/** Float4s a thread loads together in the row loaders (16 registers). */
constexpr int kRowBatch = 4;
/** v[j] = the float4 at i0 + j * step, or the row's last one past its end, every load issued before any is used. */
template <int K, typename T>
__device__ __forceinline__ void load_row_batch(const T* __restrict__ row, int i0, int step, float4 (&v)[kRowBatch]) {
#pragma unroll
  for (int j = 0; j < kRowBatch; ++j) v[j] = load4(row + (i0 + j * step < K ? i0 + j * step : K - 4));
#pragma unroll
  for (int j = 0; j < kRowBatch; ++j) keep_loaded(v[j]);
}
/** f(i, row[i .. i + 4)) for each float4 of the row this thread moves, in ascending order, loaded a batch at a time. */
template <int K, typename T, class F>
__device__ __forceinline__ void for_row_batches(const T* __restrict__ row, F&& f) {
  static_assert(K % 4 == 0, "rows are moved 4 floats at a time");
  const int step = blockDim.x * 4;
  for (int i0 = threadIdx.x * 4; i0 < K; i0 += kRowBatch * step) {
    float4 v[kRowBatch];
    load_row_batch<K>(row, i0, step, v);
#pragma unroll
    for (int j = 0; j < kRowBatch; ++j)
      if (i0 + j * step < K) f(i0 + j * step, v[j]);
  }
}

/** xs[0..K) = x[0..K). */
template <int K>
__device__ __forceinline__ void copy_row(const float* __restrict__ x, float* xs) {
  for_row_batches<K>(x, [&](int i, float4 v) { *reinterpret_cast<float4*>(xs + i) = v; });
}

/** 1 / sqrt(mean(x²) + eps), as the reference computes it (float32). */
template <int K>
__device__ __forceinline__ float rms_scale(float sum_sq, float eps) { return 1.0f / sqrtf(sum_sq / float(K) + eps); }

/** A thread's share of Σ x² over a row (its float4s in ascending order); STORE: each float4 also to xs. */
template <int K, bool STORE>
__device__ __forceinline__ float row_sum_squares(const float* __restrict__ x, float* __restrict__ xs) {
  float ss = 0.f;
  for_row_batches<K>(x, [&](int i, float4 v) {
    if constexpr (STORE) *reinterpret_cast<float4*>(xs + i) = v;
    ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
  });
  return ss;
}

/** xs = x * rsqrt(mean(x²) + eps) * w: RMSNorm fused in front of a projection. */
template <int K, typename W>
__device__ __forceinline__ void rmsnorm_row(const float* __restrict__ x, const W* __restrict__ w, float eps, float* xs) {
  const float scale = rms_scale<K>(block_sum(row_sum_squares<K, true>(x, xs)), eps);
  // Each thread rescales the elements it stored itself: no barrier needed in between.
  for_row_batches<K>(w, [&](int i, float4 wv) {
    float4* p = reinterpret_cast<float4*>(xs + i);
    *p = mul4(scale4(*p, scale), wv);
  });
}

/**
 * 1 / sqrt(mean(row²) + eps) of one row, over the whole block (every thread gets it): row_rstd and
 * the narrowing pass of a normalizing GEMM (gemm_narrow_a_kernel) share it, so their rstd bits agree.
 */
template <int K>
__device__ __forceinline__ float row_rms_scale(const float* __restrict__ row, float eps) {
  return rms_scale<K>(block_sum(row_sum_squares<K, false>(row, nullptr)), eps);
}

/** rstd[t] = 1 / sqrt(mean(x[t]²) + eps): the row statistics a prefill GEMM's normalizing A-loader needs. */
template <int K>
__global__ void __launch_bounds__(256) row_rstd_kernel(const float* __restrict__ x /*[T, K]*/, float eps, float* __restrict__ rstd /*[T]*/) {
  const float scale = row_rms_scale<K>(x + int64_t(blockIdx.x) * K, eps);
  if (threadIdx.x == 0) rstd[blockIdx.x] = scale;
}
template <int K>
inline cudaError_t row_rstd(const float* x, int T, float eps, float* rstd, cudaStream_t s) {
  row_rstd_kernel<K><<<T, 256, 0, s>>>(x, eps, rstd);
  return cudaGetLastError();
}

// ---- RoPE ------------------------------------------------------------------------------------------
/**
 * cos and sin of pos * inv_freq, the angle formed in double as the reference does (at positions
 * near 1e5 a float angle would lose the low bits); sm_80/sm_90 run double at half rate, and a
 * decode step needs only (heads + kv_heads) * head_dim / 2 of them.
 */
__device__ __forceinline__ void rope_cos_sin(int32_t pos, double inv_freq, float& c, float& s) {
  double sd, cd;
  sincos(double(pos) * inv_freq, &sd, &cd);
  c = float(cd), s = float(sd);
}
/** inv_freq[i] = theta^(-2i/head_dim), computed on the host with std::pow as the CPU backend does. */
inline void rope_inv_freq(double theta, int head_dim, double* out) {
  for (int i = 0; i < head_dim / 2; ++i) out[i] = std::pow(theta, -2.0 * i / head_dim);
}

}  // namespace mc
