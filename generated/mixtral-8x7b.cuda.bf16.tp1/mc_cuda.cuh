// Arithmetic shared by the CUDA kernels (templates/cuda/*.cuh.hbs). Not rendered: copied verbatim
// next to the generated sources, so the kernel templates stay thin (they say what is read, which
// rows, and what the epilogue does) and this file compiles on its own (test/gpu includes it).
//
// Three engines, each a __global__ template over an "Op" struct that a kernel template defines:
//   gemv_kernel    decode (one token per item): weights streamed once with 16-byte loads, f32 math
//   gemm_kernel    prefill (T > 1, bf16/f16 weights): mma.sync m16n8k16 tensor cores, f32 accumulators
//   attention_*    split-K decode attention and a tiled (flash-attention style) prefill attention
// mma.sync, cp.async and ld.global.nc run on sm_80 and sm_90a alike, so one source serves both.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "mc_abi.h"

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

/** Elements of W in one 16-byte load. */
template <typename W> constexpr int kVec = 16 / int(sizeof(W));

/** 16 bytes of weights that are read once: no L1 allocation, so they do not evict activations. */
__device__ __forceinline__ uint4 load_stream(const void* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

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

/** Four floats narrowed to four 16-bit values (an mma operand fragment), low element first. */
template <typename W> __device__ __forceinline__ uint2 pack4(float4 v);
template <> __device__ __forceinline__ uint2 pack4<bf16>(float4 v) {
  const __nv_bfloat162 a = __floats2bfloat162_rn(v.x, v.y), b = __floats2bfloat162_rn(v.z, v.w);
  return make_uint2(*reinterpret_cast<const uint32_t*>(&a), *reinterpret_cast<const uint32_t*>(&b));
}
template <> __device__ __forceinline__ uint2 pack4<f16>(float4 v) {
  const __half2 a = __floats2half2_rn(v.x, v.y), b = __floats2half2_rn(v.z, v.w);
  return make_uint2(*reinterpret_cast<const uint32_t*>(&a), *reinterpret_cast<const uint32_t*>(&b));
}

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
/** Sum over the block (every thread gets it). Every thread of the block must call it. */
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float partial[32];
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
/** xs[0..K) = x[0..K). */
template <int K>
__device__ __forceinline__ void copy_row(const float* __restrict__ x, float* xs) {
  static_assert(K % 4 == 0, "rows are moved 4 floats at a time");
  for (int i = threadIdx.x * 4; i < K; i += blockDim.x * 4) *reinterpret_cast<float4*>(xs + i) = load4(x + i);
}

/** 1 / sqrt(mean(x²) + eps), as the reference computes it (float32). */
template <int K>
__device__ __forceinline__ float rms_scale(float sum_sq, float eps) { return 1.0f / sqrtf(sum_sq / float(K) + eps); }

/** xs = x * rsqrt(mean(x²) + eps) * w: RMSNorm fused in front of a projection. */
template <int K, typename W>
__device__ __forceinline__ void rmsnorm_row(const float* __restrict__ x, const W* __restrict__ w, float eps, float* xs) {
  static_assert(K % 4 == 0, "rows are moved 4 floats at a time");
  float ss = 0.f;
  for (int i = threadIdx.x * 4; i < K; i += blockDim.x * 4) {
    const float4 v = load4(x + i);
    *reinterpret_cast<float4*>(xs + i) = v;
    ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
  }
  const float scale = rms_scale<K>(block_sum(ss), eps);
  // Each thread rescales the elements it stored itself: no barrier needed in between.
  for (int i = threadIdx.x * 4; i < K; i += blockDim.x * 4) {
    *reinterpret_cast<float4*>(xs + i) = mul4(scale4(*reinterpret_cast<const float4*>(xs + i), scale), load4(w + i));
  }
}

/** rstd[t] = 1 / sqrt(mean(x[t]²) + eps): the row statistics a prefill GEMM's normalizing A-loader needs. */
template <int K>
__global__ void __launch_bounds__(256) row_rstd_kernel(const float* __restrict__ x /*[T, K]*/, float eps, float* __restrict__ rstd /*[T]*/) {
  const float* row = x + int64_t(blockIdx.x) * K;
  float ss = 0.f;
  for (int i = threadIdx.x * 4; i < K; i += blockDim.x * 4) {
    const float4 v = load4(row + i);
    ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
  }
  const float scale = rms_scale<K>(block_sum(ss), eps);
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

// ---- decode GEMV -----------------------------------------------------------------------------------
/** The device this library runs on: multiprocessor count (GEMV grids) and whether PDL exists (sm_90+). */
struct DeviceInfo {
  int sms = 0;
  bool pdl = false;
};
inline DeviceInfo& device_info() {
  static DeviceInfo info;
  return info;
}
inline cudaError_t init_device_info() {
  int device = 0, major = 0;
  if (cudaError_t e = cudaGetDevice(&device)) return e;
  if (cudaError_t e = cudaDeviceGetAttribute(&device_info().sms, cudaDevAttrMultiProcessorCount, device)) return e;
  if (cudaError_t e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device)) return e;
  device_info().pdl = major >= 9;
  return cudaSuccess;
}

/**
 * Programmatic dependent launch (sm_90+): a kernel launched with the PDL attribute starts while the
 * previous kernel drains; this waits until that kernel has completed and its writes are visible.
 * Before it, a kernel may only read what no earlier kernel writes (the weights).
 */
__device__ __forceinline__ void wait_for_previous_kernel() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/**
 * Launches a kernel with programmatic dependent launch where the GPU has it (sm_90+): it may start
 * while the previous kernel drains. Every kernel launched so must call wait_for_previous_kernel()
 * before it reads or writes activations. (Used for the decode GEMVs; bench/RESULTS.md run 3 has
 * why the small kernels between them are not, and why nothing triggers its dependents early.)
 */
template <typename... Params, typename... Args>
inline cudaError_t launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, Args... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = s;
  cudaLaunchAttribute pdl[1];
  pdl[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  pdl[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = pdl;
  config.numAttrs = device_info().pdl ? 1 : 0;
  return cudaLaunchKernelEx(&config, kernel, args...);
}

/**
 * A warp's stream over ROWS weight rows: each lane holds the next U 16-byte chunks of every row in
 * registers (ROWS * U loads in flight), issues the following U while it multiplies these, and
 * accumulates x · row in f32 with x from shared memory. Chunks are coalesced across the warp.
 */
template <int K, typename W, int ROWS, int U = 4>
struct RowStream {
  static constexpr int VEC = kVec<W>;
  static_assert(K % VEC == 0, "a weight row is read in 16-byte chunks: K must be a multiple of 16 / sizeof(W)");
  static constexpr int CHUNKS = K / VEC, STEP = 32 * U;
  static constexpr bool EXACT = CHUNKS % STEP == 0;
  uint4 w[U][ROWS];

  /** Loads the U chunks at c0, c0 + 32, ... of every row. */
  __device__ __forceinline__ void load(const W* (&rows)[ROWS], int c0) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + 32 * u;
#pragma unroll
      for (int r = 0; r < ROWS; ++r) w[u][r] = (EXACT || c < CHUNKS) ? load_stream(rows[r] + int64_t(c) * VEC) : make_uint4(0, 0, 0, 0);
    }
  }

  /** acc[r] += x · row_r over the whole row; the first U chunks (at c0 = lane) must have been load()ed. */
  __device__ __forceinline__ void run(const float* __restrict__ x, const W* (&rows)[ROWS], int lane, float (&acc)[ROWS]) {
#pragma unroll 1
    for (int c0 = lane; c0 < CHUNKS; c0 += STEP) {
      uint4 cur[U][ROWS];
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int r = 0; r < ROWS; ++r) cur[u][r] = w[u][r];
      if (c0 + STEP < CHUNKS) load(rows, c0 + STEP);  // the next U chunks fly while these are used
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int c = c0 + 32 * u;
        if (EXACT || c < CHUNKS) {
          float xv[VEC];
#pragma unroll
          for (int i = 0; i < VEC; i += 4) *reinterpret_cast<float4*>(xv + i) = *reinterpret_cast<const float4*>(x + c * VEC + i);
#pragma unroll
          for (int r = 0; r < ROWS; ++r) {
            float wv[VEC];
            unpack<W>(cur[u][r], wv);
#pragma unroll
            for (int i = 0; i < VEC; ++i) acc[r] = fmaf(xv[i], wv[i], acc[r]);
          }
        }
      }
    }
  }
};

/** acc[r] += x · row_r for ROWS weight rows at once (a whole row stream). */
template <int K, typename W, int ROWS>
__device__ __forceinline__ void dot_rows(const float* __restrict__ x, const W* (&rows)[ROWS], int lane, float (&acc)[ROWS]) {
  RowStream<K, W, ROWS> stream;
  stream.load(rows, lane);
  stream.run(x, rows, lane, acc);
}

/**
 * Decode GEMV: blocks stay resident and stride over the row groups (one x prologue per block). The
 * Op (a struct in a kernel template) says:
 *   W, K, ROWS (rows per warp), NSRC (x vectors per item), WARPS, GROUPS (row groups in all);
 *   EARLY_ROWS: the rows of source 0 do not depend on earlier kernels (no routing), so a warp starts
 *               streaming them before it waits for the previous kernel;
 *   bool load_x(item, xs)            fill xs[NSRC][K] (all threads; false: skip this item)
 *   void rows(item, group, src, ptr[ROWS], scale)  the weight rows of a group and the source's scale
 *   void epilogue(item, group, acc[ROWS])          lane 0 of the warp; acc = sum over sources
 */
template <class Op>
__global__ void __launch_bounds__(Op::WARPS * 32) gemv_kernel(const Op op) {
  using W = typename Op::W;
  extern __shared__ float4 gemv_smem[];
  float* xs = reinterpret_cast<float*>(gemv_smem);
  const int item = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int group = blockIdx.x * Op::WARPS + warp;
  RowStream<Op::K, W, Op::ROWS> stream;
  const W* ptr[Op::ROWS];
  float scale = 1.f;
  bool loaded = false;
  if constexpr (Op::EARLY_ROWS) {
    if (group < Op::GROUPS) {
      op.rows(item, group, 0, ptr, scale);
      stream.load(ptr, lane);
      loaded = true;
    }
  }
  wait_for_previous_kernel();
  if (!op.load_x(item, xs)) return;
  __syncthreads();
#pragma unroll 1
  for (; group < Op::GROUPS; group += gridDim.x * Op::WARPS) {
    float acc[Op::ROWS] = {};
#pragma unroll 1
    for (int src = 0; src < Op::NSRC; ++src) {
      if (!loaded) {
        op.rows(item, group, src, ptr, scale);
        stream.load(ptr, lane);
      }
      loaded = false;
      float part[Op::ROWS] = {};
      stream.run(xs + src * Op::K, ptr, lane, part);
#pragma unroll
      for (int r = 0; r < Op::ROWS; ++r) acc[r] = fmaf(scale, part[r], acc[r]);
    }
#pragma unroll
    for (int r = 0; r < Op::ROWS; ++r) acc[r] = warp_sum(acc[r]);
    if (lane == 0) op.epilogue(item, group, acc);
  }
}

template <class Op> constexpr size_t gemv_smem_bytes() { return size_t(Op::NSRC) * Op::K * sizeof(float); }

/** Blocks of this GEMV that fit on the device at once (0 until gemv_prepare ran: then one block per 8 groups). */
template <class Op>
inline int& gemv_resident_blocks() {
  static int blocks = 0;
  return blocks;
}

/** Raises the kernel's dynamic shared-memory limit when x needs more than 48 KB, and sizes its grid. */
template <class Op>
inline cudaError_t gemv_prepare() {
  if (device_info().sms == 0)
    if (cudaError_t e = init_device_info()) return e;
  if (cudaError_t e = cudaFuncSetAttribute(gemv_kernel<Op>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(gemv_smem_bytes<Op>()))) return e;
  int per_sm = 0;
  if (cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, gemv_kernel<Op>, Op::WARPS * 32, gemv_smem_bytes<Op>())) return e;
  gemv_resident_blocks<Op>() = per_sm * device_info().sms;
  return cudaSuccess;
}

template <class Op>
inline cudaError_t gemv(const Op& op, int items, cudaStream_t s) {
  const int needed = (Op::GROUPS + Op::WARPS - 1) / Op::WARPS;
  const int resident = gemv_resident_blocks<Op>() / (items > 0 ? items : 1);
  const dim3 grid(resident > 0 && resident < needed ? resident : needed, items);
  return launch(gemv_kernel<Op>, grid, dim3(Op::WARPS * 32), gemv_smem_bytes<Op>(), s, op);
}

/** ptr[r] = row (first + r) of a [n, K] matrix; rows past the end point at row 0 (read, never stored). */
template <int K, int ROWS, typename W>
__device__ __forceinline__ void consecutive_rows(const W* base, int first, int n, const W* (&ptr)[ROWS]) {
#pragma unroll
  for (int r = 0; r < ROWS; ++r) ptr[r] = base + int64_t(first + r < n ? first + r : 0) * K;
}

// ---- prefill GEMM on tensor cores ------------------------------------------------------------------
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
  const unsigned s = unsigned(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

template <typename W> __device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);
template <> __device__ __forceinline__ void mma16816<bf16>(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <> __device__ __forceinline__ void mma16816<f16>(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/**
 * C[m, n] = A[m, :] · B[n, :] for one 64 x 128 tile per block (4 warps of 32 x 64), K in steps of
 * 32 through double-buffered shared memory: B (weights) by cp.async, A (f32 activations, normalized
 * or gathered by the Op) through registers, narrowed to W. Rows padded by 8 elements so that the
 * fragment loads of a warp hit 32 distinct banks. The Op says:
 *   W (bf16 or f16), K, PAIRED;  int m_count(item);  int n_count()  (columns, or units when PAIRED)
 *   float4 a(item, m, k)         4 consecutive A values (m < m_count, k % 4 == 0)
 *   const W* b_row(item, which, n)   weight row n (which = 0, or 1 for the second matrix when PAIRED)
 *   store(item, m, n, v0, v1)          columns n, n + 1 (n even)
 *   store_pair(item, m, u, a0, a1, b0, b1)  PAIRED: units u, u + 1 of both matrices (SwiGLU)
 * PAIRED interleaves the two matrices every 8 columns, so one thread holds w1·x and w3·x of a unit.
 */
constexpr int kGemmBM = 64, kGemmBN = 128, kGemmBK = 32, kGemmLds = kGemmBK + 8;

template <class Op>
__global__ void __launch_bounds__(128) gemm_kernel(const Op op) {
  using W = typename Op::W;
  constexpr int K = Op::K, BM = kGemmBM, BN = kGemmBN, BK = kGemmBK, LDS = kGemmLds;
  constexpr int KT = (K + BK - 1) / BK;
  static_assert(K % 8 == 0, "weight rows are copied 8 elements (16 bytes) at a time");
  __shared__ __align__(16) uint16_t As[2][BM][LDS];
  __shared__ __align__(16) uint16_t Bs[2][BN][LDS];

  const int item = blockIdx.z;
  const int M = op.m_count(item);
  const int m0 = blockIdx.y * BM;
  if (m0 >= M) return;
  const int N = op.n_count();
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wm = warp & 1, wn = warp >> 1, g = lane >> 2, t4 = lane & 3;

  // B rows this thread copies: tile rows tid/4 + 32j, 16-byte chunk tid%4 of each 32-wide k step.
  const W* brow[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int r = tid / 4 + 32 * j;
    if constexpr (Op::PAIRED) {
      const int frag = r / 8, unit = blockIdx.x * (BN / 2) + (frag / 2) * 8 + r % 8;
      brow[j] = unit < N ? op.b_row(item, frag % 2, unit) : nullptr;
    } else {
      const int n = blockIdx.x * BN + r;
      brow[j] = n < N ? op.b_row(item, 0, n) : nullptr;
    }
  }
  const W* const bdummy = op.b_row(item, 0, 0);
  // A values this thread loads: rows tid/8 + 16j, 4 floats at column 4 * (tid % 8).
  uint2 areg[4];
  auto load_a = [&](int k0) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int m = m0 + tid / 8 + 16 * j, k = k0 + 4 * (tid % 8);
      areg[j] = pack4<W>(m < M && k < K ? op.a(item, m, k) : make_float4(0.f, 0.f, 0.f, 0.f));
    }
  };
  auto store_a = [&](int buf) {
#pragma unroll
    for (int j = 0; j < 4; ++j) *reinterpret_cast<uint2*>(&As[buf][tid / 8 + 16 * j][4 * (tid % 8)]) = areg[j];
  };
  auto load_b = [&](int buf, int k0) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int k = k0 + 8 * (tid % 4);
      const bool ok = brow[j] != nullptr && k < K;
      cp_async16(&Bs[buf][tid / 4 + 32 * j][8 * (tid % 4)], ok ? brow[j] + k : bdummy, ok ? 16 : 0);
    }
    cp_async_commit();
  };

  float acc[2][8][4];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;

  load_a(0);
  load_b(0, 0);
  store_a(0);
  cp_async_wait_all();
  __syncthreads();
#pragma unroll 1
  for (int kt = 0; kt < KT; ++kt) {
    const int buf = kt & 1;
    if (kt + 1 < KT) {
      load_a((kt + 1) * BK);
      load_b(buf ^ 1, (kt + 1) * BK);
    }
#pragma unroll
    for (int ks = 0; ks < BK / 16; ++ks) {
      const int kk = ks * 16 + 2 * t4;
      uint32_t a[2][4], b[8][2];
#pragma unroll
      for (int mf = 0; mf < 2; ++mf) {
        const int r = wm * 32 + mf * 16 + g;
        a[mf][0] = *reinterpret_cast<const uint32_t*>(&As[buf][r][kk]);
        a[mf][1] = *reinterpret_cast<const uint32_t*>(&As[buf][r + 8][kk]);
        a[mf][2] = *reinterpret_cast<const uint32_t*>(&As[buf][r][kk + 8]);
        a[mf][3] = *reinterpret_cast<const uint32_t*>(&As[buf][r + 8][kk + 8]);
      }
#pragma unroll
      for (int nf = 0; nf < 8; ++nf) {
        const int n = wn * 64 + nf * 8 + g;
        b[nf][0] = *reinterpret_cast<const uint32_t*>(&Bs[buf][n][kk]);
        b[nf][1] = *reinterpret_cast<const uint32_t*>(&Bs[buf][n][kk + 8]);
      }
#pragma unroll
      for (int mf = 0; mf < 2; ++mf)
#pragma unroll
        for (int nf = 0; nf < 8; ++nf) mma16816<W>(acc[mf][nf], a[mf], b[nf]);
    }
    if (kt + 1 < KT) {
      store_a(buf ^ 1);
      cp_async_wait_all();
    }
    __syncthreads();
  }

  // Accumulator fragment: c0, c1 at (row g, columns 2t, 2t+1), c2, c3 at row g + 8.
#pragma unroll
  for (int mf = 0; mf < 2; ++mf) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int m = m0 + wm * 32 + mf * 16 + g + 8 * half;
      if (m >= M) continue;
      if constexpr (Op::PAIRED) {
#pragma unroll
        for (int nf = 0; nf < 8; nf += 2) {
          const int u = blockIdx.x * (BN / 2) + ((wn * 8 + nf) / 2) * 8 + 2 * t4;
          if (u < N) op.store_pair(item, m, u, acc[mf][nf][2 * half], acc[mf][nf][2 * half + 1], acc[mf][nf + 1][2 * half], acc[mf][nf + 1][2 * half + 1]);
        }
      } else {
#pragma unroll
        for (int nf = 0; nf < 8; ++nf) {
          const int n = blockIdx.x * BN + wn * 64 + nf * 8 + 2 * t4;
          if (n < N) op.store(item, m, n, acc[mf][nf][2 * half], acc[mf][nf][2 * half + 1]);
        }
      }
    }
  }
}

/** Launches over `items` groups (experts) of up to max_m rows each; n_cols = columns, or units when PAIRED. */
template <class Op>
inline cudaError_t gemm(const Op& op, int items, int max_m, int n_cols, cudaStream_t s) {
  const int cols_per_block = Op::PAIRED ? kGemmBN / 2 : kGemmBN;
  const dim3 grid((n_cols + cols_per_block - 1) / cols_per_block, (max_m + kGemmBM - 1) / kGemmBM, items);
  gemm_kernel<Op><<<grid, 128, 0, s>>>(op);
  return cudaGetLastError();
}

// ---- attention -------------------------------------------------------------------------------------
/**
 * Shared memory of one attention block: a tile of 32 keys and values widened to f32 (keys padded
 * by one float so that lane j reading key j, column d hits bank (j + d) mod 32), plus the queries.
 */
template <int HEAD_DIM>
struct KvTile {
  static constexpr int KEYS = 32, KLD = HEAD_DIM + 1;
  static constexpr size_t bytes() { return size_t(KEYS) * (KLD + HEAD_DIM) * sizeof(float); }
};

/**
 * Loads keys/values at positions [kt, kt + n) from a ring of KV_SLOTS slots (slot = position mod
 * KV_SLOTS) for KV head g, widening to f32.
 */
template <int HEAD_DIM, int KV_DIM, int KV_SLOTS, typename KV>
__device__ __forceinline__ void load_kv_tile(const KV* __restrict__ k_cache, const KV* __restrict__ v_cache, int g, int kt, int n,
                                             float* ks, float* vs) {
  constexpr int VEC = kVec<KV>;
  static_assert(HEAD_DIM % VEC == 0, "a head is read in 16-byte chunks");
  constexpr int CPR = HEAD_DIM / VEC;  // chunks per key
  for (int idx = threadIdx.x; idx < 2 * 32 * CPR; idx += blockDim.x) {
    const int which = idx / (32 * CPR), rem = idx % (32 * CPR), j = rem / CPR, c = rem % CPR;
    if (j >= n) continue;
    const int64_t slot = int64_t(kt + j) % KV_SLOTS;
    const KV* src = (which == 0 ? k_cache : v_cache) + slot * KV_DIM + g * HEAD_DIM + c * VEC;
    float v[VEC];
    unpack<KV>(*reinterpret_cast<const uint4*>(src), v);
    float* dst = which == 0 ? ks + j * KvTile<HEAD_DIM>::KLD + c * VEC : vs + j * HEAD_DIM + c * VEC;
#pragma unroll
    for (int i = 0; i < VEC; ++i) dst[i] = v[i];
  }
}

/**
 * Online-softmax state of one query row, held by one warp: lane l owns output dims l, l + 32, ...
 * update() folds in a tile of keys whose scores lane j computed (s = -inf where masked).
 */
template <int HEAD_DIM>
struct SoftmaxRow {
  static constexpr int DPL = (HEAD_DIM + 31) / 32;
  float m = -INFINITY, l = 0.f, o[DPL] = {};

  __device__ __forceinline__ void update(float s, int n, const float* vs, int lane) {
    const float tile_max = warp_max(s);
    if (tile_max == -INFINITY) return;  // every key of the tile is masked for this row
    const float m_new = fmaxf(m, tile_max);
    const float corr = expf(m - m_new);
    const float p = s == -INFINITY ? 0.f : expf(s - m_new);
    l = l * corr + warp_sum(p);
#pragma unroll
    for (int i = 0; i < DPL; ++i) o[i] *= corr;
    for (int j = 0; j < n; ++j) {
      const float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
      for (int i = 0; i < DPL; ++i) {
        const int d = lane + 32 * i;
        if (HEAD_DIM % 32 == 0 || d < HEAD_DIM) o[i] = fmaf(pj, vs[j * HEAD_DIM + d], o[i]);
      }
    }
    m = m_new;
  }
};

/** lane j's score q · key j (q pre-scaled by 1/sqrt(head_dim)), from the tile in shared memory. */
template <int HEAD_DIM>
__device__ __forceinline__ float tile_score(const float* q, const float* ks, int j) {
  const float* k = ks + j * KvTile<HEAD_DIM>::KLD;
  float s = 0.f;
#pragma unroll 8
  for (int d = 0; d < HEAD_DIM; ++d) s = fmaf(q[d], k[d], s);
  return s;
}

/**
 * Decode (one query token), split along the keys (flash-decoding): block (split, kv head) reads its
 * share of the visible keys once for all GROUP query heads of the KV head (one warp each) and
 * writes an unnormalized partial (o, m, l) per head; attention_combine merges the splits. The split
 * length adapts to the position read from device memory, so a captured graph replays unchanged.
 */
template <int HEAD_DIM, int GROUP, int N_KV_HEADS, int NSPLIT, int WINDOW, int KV_SLOTS, typename KV>
__global__ void __launch_bounds__(32 * (GROUP < 4 ? 4 : GROUP)) attention_decode_kernel(
    const float* __restrict__ q /*[N_HEADS * HEAD_DIM]*/, const KV* __restrict__ k_cache, const KV* __restrict__ v_cache,
    const int32_t* __restrict__ pos0, float* __restrict__ partial /*[N_HEADS, NSPLIT, HEAD_DIM + 2]*/) {
  constexpr int KV_DIM = N_KV_HEADS * HEAD_DIM;
  extern __shared__ float4 attn_smem[];
  float* ks = reinterpret_cast<float*>(attn_smem);
  float* vs = ks + 32 * KvTile<HEAD_DIM>::KLD;
  float* qs = vs + 32 * HEAD_DIM;  // [GROUP, HEAD_DIM]
  const int split = blockIdx.x, g = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int p = *pos0;
  const int lo = WINDOW > 0 ? max(0, p - WINDOW + 1) : 0;
  const int visible = p - lo + 1;
  const int chunk = ((visible + NSPLIT - 1) / NSPLIT + 31) / 32 * 32;
  const int begin = lo + split * chunk, end = min(p + 1, begin + chunk);
  const float scale = 1.0f / sqrtf(float(HEAD_DIM));
  for (int i = threadIdx.x; i < GROUP * HEAD_DIM; i += blockDim.x) qs[i] = q[g * GROUP * HEAD_DIM + i] * scale;
  SoftmaxRow<HEAD_DIM> row;
  for (int kt = begin; kt < end; kt += 32) {
    const int n = min(32, end - kt);
    __syncthreads();  // the previous tile (and qs) fully consumed / written
    load_kv_tile<HEAD_DIM, KV_DIM, KV_SLOTS>(k_cache, v_cache, g, kt, n, ks, vs);
    __syncthreads();
    if (warp < GROUP) row.update(lane < n ? tile_score<HEAD_DIM>(qs + warp * HEAD_DIM, ks, lane) : -INFINITY, n, vs, lane);
  }
  if (warp < GROUP) {
    float* out = partial + (int64_t(g * GROUP + warp) * NSPLIT + split) * (HEAD_DIM + 2);
#pragma unroll
    for (int i = 0; i < SoftmaxRow<HEAD_DIM>::DPL; ++i) {
      const int d = lane + 32 * i;
      if (d < HEAD_DIM) out[d] = row.o[i];
    }
    if (lane == 0) out[HEAD_DIM] = row.m, out[HEAD_DIM + 1] = row.l;  // an empty split: m = -inf, l = 0
  }
}

/** out[h] = Σ_s o_s e^(m_s - M) / Σ_s l_s e^(m_s - M): the splits of one head merged. */
template <int HEAD_DIM, int NSPLIT>
__global__ void __launch_bounds__(128) attention_combine_kernel(const float* __restrict__ partial, float* __restrict__ out /*[N_HEADS * HEAD_DIM]*/) {
  const float* part = partial + int64_t(blockIdx.x) * NSPLIT * (HEAD_DIM + 2);
  float m = -INFINITY;
  for (int s = 0; s < NSPLIT; ++s) m = fmaxf(m, part[s * (HEAD_DIM + 2) + HEAD_DIM]);
  float l = 0.f;
  for (int s = 0; s < NSPLIT; ++s) l += part[s * (HEAD_DIM + 2) + HEAD_DIM + 1] * expf(part[s * (HEAD_DIM + 2) + HEAD_DIM] - m);
  for (int d = threadIdx.x; d < HEAD_DIM; d += blockDim.x) {
    float o = 0.f;
    for (int s = 0; s < NSPLIT; ++s) {
      const float ms = part[s * (HEAD_DIM + 2) + HEAD_DIM];
      if (ms != -INFINITY) o += part[s * (HEAD_DIM + 2) + d] * expf(ms - m);
    }
    out[int64_t(blockIdx.x) * HEAD_DIM + d] = o / l;
  }
}

/**
 * Prefill: block (query tile, kv head) holds BQ tokens x GROUP heads of queries and streams the
 * keys both tiles can see through shared memory once (flash-attention style: online softmax, no
 * score matrix in memory); each of the 8 warps owns rows warp, warp + 8, ... Causal and window
 * masks per row: a query at p sees keys (p - WINDOW, p].
 */
template <int HEAD_DIM, int GROUP>
struct PrefillTile {
  static constexpr int BQ = GROUP >= 32 ? 1 : 32 / GROUP;  // tokens per block: about 32 query rows
  static constexpr int ROWS = BQ * GROUP, WARPS = 8, RPW = (ROWS + WARPS - 1) / WARPS;
  static constexpr size_t smem_bytes() { return KvTile<HEAD_DIM>::bytes() + size_t(ROWS) * HEAD_DIM * sizeof(float); }
};

template <int HEAD_DIM, int GROUP, int N_KV_HEADS, int WINDOW, int KV_SLOTS, typename KV>
__global__ void __launch_bounds__(256) attention_prefill_kernel(const float* __restrict__ q /*[T, N_HEADS * HEAD_DIM]*/, int T,
                                                                const KV* __restrict__ k_cache, const KV* __restrict__ v_cache,
                                                                const int32_t* __restrict__ pos0, float* __restrict__ out) {
  using Tile = PrefillTile<HEAD_DIM, GROUP>;
  constexpr int KV_DIM = N_KV_HEADS * HEAD_DIM, Q_DIM = N_KV_HEADS * GROUP * HEAD_DIM;
  extern __shared__ float4 attn_smem[];
  float* ks = reinterpret_cast<float*>(attn_smem);
  float* vs = ks + 32 * KvTile<HEAD_DIM>::KLD;
  float* qs = vs + 32 * HEAD_DIM;  // [ROWS, HEAD_DIM]
  const int g = blockIdx.y, t0 = blockIdx.x * Tile::BQ, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int tn = min(Tile::BQ, T - t0);
  const int p_first = *pos0 + t0, p_last = p_first + tn - 1;
  const float scale = 1.0f / sqrtf(float(HEAD_DIM));
  for (int i = threadIdx.x; i < Tile::ROWS * HEAD_DIM; i += blockDim.x) {
    const int r = i / HEAD_DIM, d = i % HEAD_DIM, t = t0 + r / GROUP, h = g * GROUP + r % GROUP;
    qs[i] = t < T ? q[int64_t(t) * Q_DIM + h * HEAD_DIM + d] * scale : 0.f;
  }
  SoftmaxRow<HEAD_DIM> rows[Tile::RPW];
  const int lo = WINDOW > 0 ? max(0, p_first - WINDOW + 1) : 0;
  for (int kt = lo; kt <= p_last; kt += 32) {
    const int n = min(32, p_last + 1 - kt);
    __syncthreads();
    load_kv_tile<HEAD_DIM, KV_DIM, KV_SLOTS>(k_cache, v_cache, g, kt, n, ks, vs);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < Tile::RPW; ++i) {
      const int r = warp + Tile::WARPS * i;
      if (r >= Tile::ROWS || t0 + r / GROUP >= T) continue;  // uniform per warp
      const int p = p_first + r / GROUP;
      const int key = kt + lane;
      const bool visible = lane < n && key <= p && (WINDOW == 0 || key > p - WINDOW);
      rows[i].update(visible ? tile_score<HEAD_DIM>(qs + r * HEAD_DIM, ks, lane) : -INFINITY, n, vs, lane);
    }
  }
#pragma unroll
  for (int i = 0; i < Tile::RPW; ++i) {
    const int r = warp + Tile::WARPS * i, t = t0 + r / GROUP;
    if (r >= Tile::ROWS || t >= T) continue;
    float* o = out + int64_t(t) * Q_DIM + (g * GROUP + r % GROUP) * HEAD_DIM;
#pragma unroll
    for (int j = 0; j < SoftmaxRow<HEAD_DIM>::DPL; ++j) {
      const int d = lane + 32 * j;
      if (d < HEAD_DIM) o[d] = rows[i].o[j] / rows[i].l;
    }
  }
}

}  // namespace mc
