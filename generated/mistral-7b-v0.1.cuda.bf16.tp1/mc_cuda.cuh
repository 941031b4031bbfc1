// Arithmetic shared by the CUDA kernels (templates/cuda/*.cuh.hbs). Not rendered: copied verbatim
// next to the generated sources, so the kernel templates stay thin (they say what is read, which
// rows, and what the epilogue does) and this file compiles on its own (test/gpu includes it).
//
// Three engines, each a __global__ template over an "Op" struct that a kernel template defines:
//   gemv_kernel    decode (one token per item): weights streamed once with 16-byte loads, f32 math
//   gemm_kernel    prefill (T > 1, bf16/f16 weights): mma.sync m16n8k16 tensor cores, f32 accumulators
//   attention_*    split-K decode attention; prefill attention flash-attention style, on tensor
//                  cores (mma.sync) for 16-bit KV caches, in exact f32 for f32 caches
// mma.sync, cp.async and ld.global.nc run on sm_80 and sm_90a alike, so one source serves both.
// The inline PTX itself is in mc_ptx.cuh.
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
/**
 * The device this library runs on: multiprocessor count (GEMV grids), whether PDL exists (sm_90+),
 * and whether prefill GEMMs may use the wgmma engine (mc_gemm_wgmma.cuh): only where the code loaded
 * for this GPU was built for sm_90a, and, until that engine has passed the GPU check, only when asked
 * for in the environment: MC_CUDA_GEMM=wgmma (where gemm() judges it faster), MC_CUDA_GEMM=wgmma-all
 * (every prefill GEMM: kernel checks and A/B timing); unset or MC_CUDA_GEMM=mma: mma.sync only.
 */
struct DeviceInfo {
  int sms = 0;
  bool pdl = false;
  bool wgmma_built = false;  // the loaded code has the engine (sm_90a build)
  bool wgmma = false, wgmma_all = false;
  bool a16 = true;  // prefill GEMMs narrow A once (gemm_narrow_a_kernel); MC_CUDA_A16=0 switches it off (A/B timing)
  // Decode GEMVs prefetch this much of the next one's weights into L2 (L2Next): from a GEMV to the
  // next, and across the attention (wq|wk|wv to wo, where the memory pipe idles for longer).
  // MC_CUDA_PREFETCH_MB=N (both) or N,M (M across the attention); off unless set.
  int64_t l2_prefetch_bytes = 0, l2_prefetch_attention_bytes = 0;
};

/**
 * MC_CUDA_PREFETCH_MB: "N" or "N,M" whole MiB, each capped at the L2's whole MiB; anything else
 * (empty, signs, spaces, other separators) gives 0 for both, i.e. off.
 */
inline void parse_prefetch_mib(const char* text, int l2_bytes, int64_t& between, int64_t& across) {
  between = across = 0;
  if (text == nullptr) return;
  long long v[2] = {0, 0};
  int n = 0;
  const char* c = text;
  for (; n < 2; ++n) {
    if (*c < '0' || *c > '9') return;
    char* end = nullptr;
    v[n] = std::strtoll(c, &end, 10);
    c = end;
    if (*c == '\0') break;
    if (*c != ',' || n == 1) return;
    ++c;
  }
  if (n == 0) v[1] = v[0];
  const long long cap = l2_bytes >> 20;
  between = int64_t(std::min(v[0], cap)) << 20;
  across = int64_t(std::min(v[1], cap)) << 20;
}
inline DeviceInfo& device_info() {
  static DeviceInfo info;
  return info;
}
/**
 * 1 in the code built for sm_90a (the one with wgmma), 0 in every other build; read by the host from
 * the module the driver loaded for this GPU. One per translation unit (a library is one: model.cu).
 * device_info() is per process: it describes the GPU current at the first prepare(), which with
 * --tp is every rank's GPU (one kind of GPU per machine).
 */
#if defined(MC_WGMMA_ENABLED)
static __device__ int wgmma_built = 1;
#else
static __device__ int wgmma_built = 0;
#endif
inline cudaError_t init_device_info() {
  int device = 0, major = 0, built = 0;
  if (cudaError_t e = cudaGetDevice(&device)) return e;
  if (cudaError_t e = cudaDeviceGetAttribute(&device_info().sms, cudaDevAttrMultiProcessorCount, device)) return e;
  if (cudaError_t e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device)) return e;
  device_info().pdl = major >= 9;
  if (cudaError_t e = cudaMemcpyFromSymbol(&built, wgmma_built, sizeof built)) return e;
  const char* engine = std::getenv("MC_CUDA_GEMM");
  const bool all = engine != nullptr && std::strcmp(engine, "wgmma-all") == 0;
  device_info().wgmma_built = built == 1;
  device_info().wgmma = built == 1 && (all || (engine != nullptr && std::strcmp(engine, "wgmma") == 0));
  device_info().wgmma_all = device_info().wgmma && all;
  const char* a16 = std::getenv("MC_CUDA_A16");
  device_info().a16 = a16 == nullptr || std::strcmp(a16, "0") != 0;
  // Off until measured: bench/RESULTS.md run 9.
  int l2 = 0;
  if (cudaError_t e = cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device)) return e;
  parse_prefetch_mib(std::getenv("MC_CUDA_PREFETCH_MB"), l2, device_info().l2_prefetch_bytes, device_info().l2_prefetch_attention_bytes);
  return cudaSuccess;
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
 * The first `bytes` of the weights that the next weight-streaming decode kernel reads, for this
 * GEMV's warps to prefetch into L2 as they finish. Between two GEMVs the memory pipe idles while
 * the last warps of one drain and the next launches and waits for its first loads (~5 µs a kernel
 * on the 7B: bench/RESULTS.md runs 1-4); bytes fetched then are bytes the next one finds in L2.
 * Warps that are done take consecutive shares, so the prefetch runs in this kernel's tail only.
 * Decode only: a prefill GEMM's tail is a small part of its time. Run 9 there has the prediction.
 */
struct L2Next {
  const char* p = nullptr;
  int64_t bytes = 0;  // a multiple of 16, p 16-byte aligned (l2_next); 0: nothing to prefetch

  /** Warp w of `warps` hints its share: 128-byte multiples, in warp order, the last one shorter. */
  __device__ __forceinline__ void prefetch_share(int64_t w, int64_t warps, int lane) const {
    if (bytes <= 0) return;
    const int64_t share = (bytes + warps * 128 - 1) / (warps * 128) * 128, first = w * share;
    if (first < bytes) prefetch_l2_warp(p + first, uint32_t(bytes - first < share ? bytes - first : share), lane);
  }
};
/** Where the next GEMV starts: right after this one, or after the attention (a longer idle span). */
enum class NextIs { adjacent, after_attention };
/** The next GEMV's weights (count elements at p), as much of them as device_info() says to prefetch. */
template <typename T>
inline L2Next l2_next(const T* p, int64_t count, NextIs where = NextIs::adjacent) {
  L2Next next;
  if (p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 != 0) return next;
  const DeviceInfo& info = device_info();
  next.p = reinterpret_cast<const char*>(p);
  next.bytes = std::min<int64_t>(count * int64_t(sizeof(T)), where == NextIs::after_attention ? info.l2_prefetch_attention_bytes : info.l2_prefetch_bytes) / 16 * 16;
  return next;
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
__global__ void __launch_bounds__(Op::WARPS * 32) gemv_kernel(const Op op, const L2Next next) {
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
  if (!op.load_x(item, xs)) group = Op::GROUPS;  // nothing to do for this item (uniform in the block)
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
  next.prefetch_share((int64_t(blockIdx.y) * gridDim.x + blockIdx.x) * Op::WARPS + warp, int64_t(gridDim.x) * gridDim.y * Op::WARPS, lane);
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

/** Launches the GEMV of `items` tokens (or routed rows); its warps prefetch `next` as they finish. */
template <class Op>
inline cudaError_t gemv(const Op& op, int items, cudaStream_t s, L2Next next = {}) {
  const int needed = (Op::GROUPS + Op::WARPS - 1) / Op::WARPS;
  const int resident = gemv_resident_blocks<Op>() / (items > 0 ? items : 1);
  const dim3 grid(resident > 0 && resident < needed ? resident : needed, items);
  return launch(gemv_kernel<Op>, grid, dim3(Op::WARPS * 32), gemv_smem_bytes<Op>(), s, op, next);
}

/** ptr[r] = row (first + r) of a [n, K] matrix; rows past the end point at row 0 (read, never stored). */
template <int K, int ROWS, typename W>
__device__ __forceinline__ void consecutive_rows(const W* base, int first, int n, const W* (&ptr)[ROWS]) {
#pragma unroll
  for (int r = 0; r < ROWS; ++r) ptr[r] = base + int64_t(first + r < n ? first + r : 0) * K;
}

// ---- prefill GEMM on tensor cores ------------------------------------------------------------------
/**
 * The weight row behind row r of the BN-row B tile of column block blockIdx.x, or nullptr past the
 * end (N columns, or units when PAIRED). PAIRED interleaves the two matrices every 8 rows, so one
 * thread's accumulators hold w1·x and w3·x of the same unit. Shared by both GEMM engines.
 */
template <class Op, int BN>
__device__ __forceinline__ const typename Op::W* gemm_b_row(const Op& op, int item, int r, int N) {
  if constexpr (Op::PAIRED) {
    const int frag = r / 8, unit = blockIdx.x * (BN / 2) + (frag / 2) * 8 + r % 8;
    return unit < N ? op.b_row(item, frag % 2, unit) : nullptr;
  } else {
    const int n = blockIdx.x * BN + r;
    return n < N ? op.b_row(item, 0, n) : nullptr;
  }
}

/**
 * Whether an Op's store is a linear accumulation that may also be made atomically (it has
 * store_add): then partial sums over ranges of K may be added by different blocks (split-K).
 */
template <class Op, class = void> constexpr bool kSplitK = false;
template <class Op> constexpr bool kSplitK<Op, std::void_t<decltype(&Op::store_add)>> = true;

/**
 * Where item `item`'s rows start in a narrowed A (A16): an Op over several items (experts) says so
 * with a16_first_row(item) (its rows must be consecutive there); one item starts at row 0.
 */
template <class Op, class = void> constexpr bool kGroupedA16 = false;
template <class Op> constexpr bool kGroupedA16<Op, std::void_t<decltype(&Op::a16_first_row)>> = true;
template <class Op>
__device__ __forceinline__ int a16_first_row(const Op& op, int item) {
  if constexpr (kGroupedA16<Op>) return op.a16_first_row(item);
  return 0;
}

/**
 * The A rows of a GEMM with RMSNorm fused in front: A[m, k] = x[m, k] * rstd[m] * norm[k]. An Op
 * holding one as `row_norm` (one item) leaves rstd to gemm(), which computes it where it costs
 * least: inside gemm_narrow_a_kernel when A is narrowed once (that kernel reads each row anyway),
 * else by a row_rstd launch before the GEMM, whose A loader then reads rstd[m].
 */
template <int K, typename W>
struct RowNorm {
  const float* x;   // [rows, K] f32
  const W* norm;    // [K]
  float eps;
  float* rstd;      // [rows] scratch, written by gemm() (only where A is read through the Op)
  __device__ __forceinline__ float4 a(int m, int k, float r) const { return mul4(scale4(load4(x + int64_t(m) * K + k), r), load4(norm + k)); }
  __device__ __forceinline__ float4 a(int m, int k) const { return a(m, k, rstd[m]); }
};
template <class Op, class = void> constexpr bool kRowNorm = false;
template <class Op> constexpr bool kRowNorm<Op, std::void_t<decltype(&Op::row_norm)>> = true;

/**
 * Tile shapes of the prefill GEMM: BM x BN outputs per block, WM x WN per warp (MF x NF mma tiles of
 * 16 x 8), K in steps of BK through STAGES shared-memory buffers. Rows are padded by 8 elements so
 * that the fragment loads of a warp hit 32 distinct banks.
 */
template <int BM_, int BN_, int WM_, int WN_, int MIN_BLOCKS_>
struct GemmTile {
  static constexpr int BM = BM_, BN = BN_, WM = WM_, WN = WN_, BK = 32, STAGES = 4, LDS = BK + 8;
  static constexpr int MIN_BLOCKS = MIN_BLOCKS_;  // blocks per SM the register budget is cut for (128 registers a thread)
  static constexpr int WARPS = (BM / WM) * (BN / WN), THREADS = 32 * WARPS, MF = WM / 16, NF = WN / 8;
  static constexpr int A_LOADS = BM * BK / 4 / THREADS;  // float4 of A per thread per stage
  static constexpr int B_LOADS = BN * BK / 8 / THREADS;  // 16-byte copies of B per thread per stage
  static constexpr int A16_LOADS = BM * BK / 8 / THREADS;  // 16-byte copies of A per thread per stage (A16)
  static_assert(A_LOADS * 4 * THREADS == BM * BK && B_LOADS * 8 * THREADS == BN * BK && A16_LOADS * 8 * THREADS == BM * BK, "whole loads per thread");
  static constexpr size_t smem_bytes() { return size_t(STAGES) * (BM + BN) * LDS * sizeof(uint16_t); }
};
/** Large problems (prefill of hundreds of tokens): 8 warps of 64 x 32, two blocks (160 KB of stages) per SM. */
using GemmLarge = GemmTile<128, 128, 64, 32, 2>;
/** Few tokens: the weights' bytes set the time, so more, smaller blocks keep every SM streaming. */
using GemmSmall = GemmTile<64, 64, 32, 32, 4>;

/**
 * C[m, n] = A[m, :] · B[n, :] on tensor cores (mma.sync m16n8k16, f32 accumulators). B (weights) is
 * copied by cp.async STAGES - 1 steps ahead; A (f32 activations, normalized or gathered by the Op)
 * for that same stage is loaded into registers at the start of a step (in flight while the step
 * computes), then narrowed to W and stored at its end. With f16 weights A is narrowed to f16: an
 * activation beyond ±65504 would become inf (bf16 has the f32 range).
 * The Op says:
 *   W (bf16 or f16), K, PAIRED;  int m_count(item);  int n_count()  (columns, or units when PAIRED)
 *   float4 a(item, m, k)         4 consecutive A values (m < m_count, k % 4 == 0)
 *   const W* b_row(item, which, n)   weight row n (which = 0, or 1 for the second matrix when PAIRED)
 *   store(item, m, n, v0, v1)          columns n, n + 1 (n even; n + 1 may be N: the Op guards it)
 *   store_pair(item, m, u, a0, a1, b0, b1)  PAIRED: units u, u + 1 of both matrices (SwiGLU)
 *   store_add(item, m, n, v0, v1)      optional: store as an atomic accumulation (residual +=), which
 *                                      lets gemm() split K across blocks when it has too few (below)
 * PAIRED interleaves the two matrices every 8 columns, so one thread holds w1·x and w3·x of a unit.
 * With `splits` > 1, blockIdx.z = item * splits + split: the block sums one of `splits` ranges of
 * K steps and adds its partial through store_add.
 * A16: A is not read through the Op; gemm_narrow_a_kernel has written it to `a16` once, narrowed
 * to W (row-major, K per row; an item's rows from a16_first_row), and its tiles are copied by
 * cp.async beside B's. (A template flag, not a runtime branch: with both paths the large tile needs
 * more than its 128 registers.)
 */
template <class Op, class Tile, bool A16>
__global__ void __launch_bounds__(Tile::THREADS, Tile::MIN_BLOCKS) gemm_kernel(const Op op, int splits, const uint16_t* __restrict__ a16) {
  using W = typename Op::W;
  constexpr int K = Op::K, BM = Tile::BM, BN = Tile::BN, BK = Tile::BK, LDS = Tile::LDS, S = Tile::STAGES;
  constexpr int MF = Tile::MF, NF = Tile::NF, THREADS = Tile::THREADS;
  constexpr int KT = (K + BK - 1) / BK;
  static_assert(K % 8 == 0, "weight rows are copied 8 elements (16 bytes) at a time");
  extern __shared__ float4 gemm_smem[];
  uint16_t* As = reinterpret_cast<uint16_t*>(gemm_smem);  // [S][BM][LDS]
  uint16_t* Bs = As + S * BM * LDS;                        // [S][BN][LDS]

  const int item = int(blockIdx.z) / splits, split = int(blockIdx.z) % splits;
  const int M = op.m_count(item);
  const int m0 = blockIdx.y * BM;
  if (m0 >= M) return;
  const int N = op.n_count();
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wm = warp % (BM / Tile::WM), wn = warp / (BM / Tile::WM), g = lane >> 2, t4 = lane & 3;
  // This block's K steps [kt0, kt1): all of them, or its split's share.
  const int per_split = (KT + splits - 1) / splits, kt0 = split * per_split, kt1 = min(KT, kt0 + per_split);

  // B rows this thread copies: tile row idx / 4, 16-byte chunk idx % 4 of each 32-wide k step.
  const W* brow[Tile::B_LOADS];
#pragma unroll
  for (int j = 0; j < Tile::B_LOADS; ++j) brow[j] = gemm_b_row<Op, BN>(op, item, (tid + THREADS * j) / 4, N);
  const W* const bdummy = op.b_row(item, 0, 0);
  auto load_b = [&](int buf, int k0) {
#pragma unroll
    for (int j = 0; j < Tile::B_LOADS; ++j) {
      const int idx = tid + THREADS * j, k = k0 + 8 * (idx % 4);
      const bool ok = brow[j] != nullptr && k < K;
      cp_async16(Bs + (buf * BN + idx / 4) * LDS + 8 * (idx % 4), ok ? brow[j] + k : bdummy, ok ? 16 : 0);
    }
  };
  // A16: tile row idx / 4, 16-byte chunk idx % 4 of each 32-wide k step (as for B).
  const uint16_t* const a16_item = A16 ? a16 + int64_t(a16_first_row(op, item)) * K : nullptr;
  auto load_a16 = [&](int buf, int k0) {
#pragma unroll
    for (int j = 0; j < Tile::A16_LOADS; ++j) {
      const int idx = tid + THREADS * j, m = m0 + idx / 4, k = k0 + 8 * (idx % 4);
      const bool ok = m < M && k < K;
      cp_async16(As + (buf * BM + idx / 4) * LDS + 8 * (idx % 4), ok ? a16_item + int64_t(m) * K + k : a16, ok ? 16 : 0);
    }
  };
  // A values this thread loads through the Op: row idx / 8, 4 floats at column 4 * (idx % 8).
  float4 areg[Tile::A_LOADS];
  auto load_a = [&](int k0) {
#pragma unroll
    for (int j = 0; j < Tile::A_LOADS; ++j) {
      const int idx = tid + THREADS * j, m = m0 + idx / 8, k = k0 + 4 * (idx % 8);
      areg[j] = m < M && k < K ? op.a(item, m, k) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
  };
  auto store_a = [&](int buf) {
#pragma unroll
    for (int j = 0; j < Tile::A_LOADS; ++j) {
      const int idx = tid + THREADS * j;
      *reinterpret_cast<uint2*>(As + (buf * BM + idx / 8) * LDS + 4 * (idx % 8)) = pack4<W>(areg[j]);
    }
  };

  float acc[MF][NF][4];
#pragma unroll
  for (int i = 0; i < MF; ++i)
#pragma unroll
    for (int j = 0; j < NF; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;

  // Step kt uses buffer (kt - kt0) % S.
#pragma unroll
  for (int st = 0; st < S - 1; ++st) {
    if (kt0 + st < kt1) {
      load_b(st, (kt0 + st) * BK);
      if constexpr (A16) {
        load_a16(st, (kt0 + st) * BK);
      } else {
        load_a((kt0 + st) * BK);
        store_a(st);
      }
    }
    cp_async_commit();  // one group per stage, empty or not, so that wait<S - 2> always means "stage kt landed"
  }
#pragma unroll 1
  for (int kt = kt0; kt < kt1; ++kt) {
    cp_async_wait<S - 2>();
    __syncthreads();  // stage kt is visible to all; every warp is done with stage kt - 1, whose buffer is refilled next
    const int next = kt + S - 1, buf = (kt - kt0) % S, next_buf = (next - kt0) % S;
    if (next < kt1) {
      load_b(next_buf, next * BK);
      if constexpr (A16) load_a16(next_buf, next * BK);
      else load_a(next * BK);
    }
    cp_async_commit();
    const uint16_t* at = As + buf * BM * LDS;
    const uint16_t* bt = Bs + buf * BN * LDS;
#pragma unroll
    for (int ks = 0; ks < BK / 16; ++ks) {
      const int kk = ks * 16 + 2 * t4;
      uint32_t a[MF][4], b[NF][2];
#pragma unroll
      for (int mf = 0; mf < MF; ++mf) {
        const uint16_t* r = at + (wm * Tile::WM + mf * 16 + g) * LDS + kk;
        a[mf][0] = *reinterpret_cast<const uint32_t*>(r);
        a[mf][1] = *reinterpret_cast<const uint32_t*>(r + 8 * LDS);
        a[mf][2] = *reinterpret_cast<const uint32_t*>(r + 8);
        a[mf][3] = *reinterpret_cast<const uint32_t*>(r + 8 * LDS + 8);
      }
#pragma unroll
      for (int nf = 0; nf < NF; ++nf) {
        const uint16_t* r = bt + (wn * Tile::WN + nf * 8 + g) * LDS + kk;
        b[nf][0] = *reinterpret_cast<const uint32_t*>(r);
        b[nf][1] = *reinterpret_cast<const uint32_t*>(r + 8);
      }
#pragma unroll
      for (int mf = 0; mf < MF; ++mf)
#pragma unroll
        for (int nf = 0; nf < NF; ++nf) mma16816<W>(acc[mf][nf], a[mf], b[nf]);
    }
    if constexpr (!A16) {
      if (next < kt1) store_a(next_buf);  // that buffer was last read in step kt - 1, before this step's barrier
    }
  }
  cp_async_wait<0>();

  // Accumulator fragment: c0, c1 at (row g, columns 2t, 2t+1), c2, c3 at row g + 8.
#pragma unroll
  for (int mf = 0; mf < MF; ++mf) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int m = m0 + wm * Tile::WM + mf * 16 + g + 8 * half;
      if (m >= M) continue;
      if constexpr (Op::PAIRED) {
#pragma unroll
        for (int nf = 0; nf < NF; nf += 2) {
          const int u = blockIdx.x * (BN / 2) + ((wn * NF + nf) / 2) * 8 + 2 * t4;
          if (u < N) op.store_pair(item, m, u, acc[mf][nf][2 * half], acc[mf][nf][2 * half + 1], acc[mf][nf + 1][2 * half], acc[mf][nf + 1][2 * half + 1]);
        }
      } else {
#pragma unroll
        for (int nf = 0; nf < NF; ++nf) {
          const int n = blockIdx.x * BN + wn * Tile::WN + nf * 8 + 2 * t4;
          if (n >= N) continue;
          if constexpr (kSplitK<Op>) {
            if (splits > 1) {
              op.store_add(item, m, n, acc[mf][nf][2 * half], acc[mf][nf][2 * half + 1]);
              continue;
            }
          }
          op.store(item, m, n, acc[mf][nf][2 * half], acc[mf][nf][2 * half + 1]);
        }
      }
    }
  }
}

}  // namespace mc
#include "mc_gemm_wgmma.cuh"  // the sm_90a engine (gemm_wgmma_kernel), built on the helpers above
namespace mc {

/**
 * Raises the tile shapes' dynamic shared-memory limit (the large mma tile needs 80 KB, the wgmma
 * tile 161 KB, the latter only where it runs). f32 weights have no GEMM.
 */
template <class Op, bool A16>
inline cudaError_t gemm_prepare_variant() {
  if (device_info().wgmma)
    if (cudaError_t e = cudaFuncSetAttribute(gemm_wgmma_kernel<Op, A16>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(wgmma::SMEM_BYTES))) return e;
  if (cudaError_t e = cudaFuncSetAttribute(gemm_kernel<Op, GemmLarge, A16>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(GemmLarge::smem_bytes()))) return e;
  return cudaFuncSetAttribute(gemm_kernel<Op, GemmSmall, A16>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(GemmSmall::smem_bytes()));
}
/** Both variants of the Op's kernels: gemm() reads A through the Op below kA16MinRows rows, narrowed from there. */
template <class Op>
inline cudaError_t gemm_prepare() {
  if constexpr (kTensorCores<typename Op::W>) {
    if (device_info().sms == 0)
      if (cudaError_t e = init_device_info()) return e;
    if (cudaError_t e = gemm_prepare_variant<Op, false>()) return e;
    return gemm_prepare_variant<Op, true>();
  }
  return cudaSuccess;
}

/** The grid of a GEMM in BM x BN tiles: column blocks (BN / 2 units each when PAIRED), row blocks, items. */
template <class Op, int BM, int BN>
inline dim3 gemm_grid(int items, int max_m, int n_cols) {
  const int cols_per_block = Op::PAIRED ? BN / 2 : BN;
  return dim3((n_cols + cols_per_block - 1) / cols_per_block, (max_m + BM - 1) / BM, items);
}

/** Blocks of that grid (b_rows: weight rows, both matrices when PAIRED). */
template <int BM, int BN>
inline int64_t gemm_blocks(int64_t b_rows, int max_m, int items) {
  return (b_rows + BN - 1) / BN * ((max_m + BM - 1) / BM) * items;
}

template <class Op, class Tile, bool A16>
inline cudaError_t gemm_launch(const Op& op, int items, int max_m, int n_cols, const uint16_t* a16, cudaStream_t s, int splits = 1) {
  dim3 grid = gemm_grid<Op, Tile::BM, Tile::BN>(items, max_m, n_cols);
  grid.z *= unsigned(splits);
  gemm_kernel<Op, Tile, A16><<<grid, Tile::THREADS, Tile::smem_bytes(), s>>>(op, splits, a16);
  return cudaGetLastError();
}

/**
 * Row a16_first_row(item) + m of a16 = the Op's A row m of `item` narrowed to W (block (m, item)):
 * every column block of the GEMM then copies 16-bit A tiles instead of reading (and normalizing,
 * for the fused RMSNorm, or gathering, for the experts) f32 rows again, half the bytes from L2 for
 * the operand that every column block re-reads.
 */
template <class Op>
__global__ void __launch_bounds__(256) gemm_narrow_a_kernel(const Op op, uint16_t* __restrict__ a16) {
  using W = typename Op::W;
  const int m = blockIdx.x, item = blockIdx.y;
  if (m >= op.m_count(item)) return;
  uint16_t* row = a16 + (int64_t(a16_first_row(op, item)) + m) * Op::K;
  if constexpr (kRowNorm<Op>) {
    // The row's statistic here, as row_rstd_kernel computes it (same threads, same order of sums).
    const float* x = op.row_norm.x + int64_t(m) * Op::K;
    float ss = 0.f;
    for (int k = threadIdx.x * 4; k < Op::K; k += blockDim.x * 4) {
      const float4 v = load4(x + k);
      ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
    const float r = rms_scale<Op::K>(block_sum(ss), op.row_norm.eps);
    for (int k = threadIdx.x * 4; k < Op::K; k += blockDim.x * 4) *reinterpret_cast<uint2*>(row + k) = pack4<W>(op.row_norm.a(m, k, r));
  } else {
    for (int k = threadIdx.x * 4; k < Op::K; k += blockDim.x * 4) *reinterpret_cast<uint2*>(row + k) = pack4<W>(op.a(item, m, k));
  }
}

/**
 * Fewest rows for which a GEMM narrows A once first (a16): a small block's f32 A rows are then as
 * many bytes as its weight rows or more (64 × K × 4 B against 64 × K × 2 B), re-read by every
 * column block; below it the extra launch costs more than the re-reads.
 */
constexpr int kA16MinRows = 64;

/** Most K ranges a GEMM is split into, and the fewest K steps (of 32) in one range. */
constexpr int kMaxSplits = 8, kMinSplitSteps = 8;

/**
 * How many K ranges to split a small-tile GEMM into: with fewer blocks than SMs (few tokens and
 * few columns, e.g. wo and w2 of a short prefill) each block streams its weights alone and the
 * grid reads them at a fraction of the bandwidth; splitting K gives every SM about two blocks. Only
 * for Ops with store_add (their partials are added atomically: the sum's rounding order varies
 * between runs, as with any split-K). 1: no split.
 */
template <class Op>
inline int gemm_splits(int64_t small_blocks, int64_t sms) {
  if constexpr (kSplitK<Op>) {
    constexpr int KT = (Op::K + GemmSmall::BK - 1) / GemmSmall::BK;
    if (small_blocks >= sms) return 1;
    const int64_t wanted = (2 * sms + small_blocks - 1) / small_blocks;
    return int(std::max<int64_t>(1, std::min<int64_t>({wanted, kMaxSplits, KT / kMinSplitSteps})));
  }
  return 1;
}

/** gemm() below, with A read through the Op or (A16) copied from `a16`. */
template <class Op, bool A16>
inline cudaError_t gemm_run(const Op& op, int items, int max_m, int n_cols, const uint16_t* a16, cudaStream_t s) {
  const int64_t b_rows = Op::PAIRED ? 2 * int64_t(n_cols) : n_cols, sms = device_info().sms > 0 ? device_info().sms : 1;
  const int64_t large_slots = GemmLarge::MIN_BLOCKS * sms, small_slots = GemmSmall::MIN_BLOCKS * sms;
  const int64_t large_waves = (gemm_blocks<GemmLarge::BM, GemmLarge::BN>(b_rows, max_m, items) + large_slots - 1) / large_slots;
  const int64_t small_waves = (gemm_blocks<GemmSmall::BM, GemmSmall::BN>(b_rows, max_m, items) + small_slots - 1) / small_slots;
  if (device_info().wgmma) {
    // A wgmma block is 4 small blocks of work, one block per SM: a wave of it is a small wave of work,
    // assumed done in half the time. Only where its grid keeps at least 3/4 of the SMs busy: with few
    // tokens the weights' bytes set the time, and every SM must stream them.
    const int64_t wg_blocks = gemm_blocks<wgmma::BM, wgmma::BN>(b_rows, max_m, items);
    if (device_info().wgmma_all || (4 * wg_blocks >= 3 * sms && (wg_blocks + sms - 1) / sms < 2 * small_waves)) {
      gemm_wgmma_kernel<Op, A16><<<gemm_grid<Op, wgmma::BM, wgmma::BN>(items, max_m, n_cols), wgmma::THREADS, wgmma::SMEM_BYTES, s>>>(op, a16);
      return cudaGetLastError();
    }
  }
  const int splits = gemm_splits<Op>(gemm_blocks<GemmSmall::BM, GemmSmall::BN>(b_rows, max_m, items), sms);
  if (splits > 1) return gemm_launch<Op, GemmSmall, A16>(op, items, max_m, n_cols, a16, s, splits);
  // A large wave is 2 small waves of work (4x the work per block, half the slots), done in 2 / 1.5 of the time.
  if (4 * large_waves < 3 * small_waves) return gemm_launch<Op, GemmLarge, A16>(op, items, max_m, n_cols, a16, s);
  return gemm_launch<Op, GemmSmall, A16>(op, items, max_m, n_cols, a16, s);
}

/**
 * Launches over `items` groups (experts) of up to max_m rows each; n_cols = columns, or units when
 * PAIRED. Picks the tile whose grid takes fewer waves, counting a large block as 4 small ones done
 * 1.5x as efficiently (each operand fragment feeds twice the mma): with few tokens, where the
 * weights' bytes set the time, the small tile's 4x as many blocks keep every SM streaming, and a
 * grid just over one wave of large blocks (e.g. 288 on 264 slots) is better cut small.
 * `a16_scratch` holds every item's A rows, Op::K each (several items need the Op's a16_first_row):
 * from kA16MinRows rows (max_m), A is narrowed into it once (gemm_narrow_a_kernel) and the GEMM
 * copies it from there. An Op with a RowNorm gets its row statistics here too (RowNorm).
 */
template <class Op>
inline cudaError_t gemm(const Op& op, int items, int max_m, int n_cols, cudaStream_t s, uint16_t* a16_scratch) {
  static_assert(kTensorCores<typename Op::W>, "a GEMM on tensor cores");
  if constexpr (kRowNorm<Op>) {
    if (items != 1) return cudaErrorInvalidValue;  // one row statistic per row of the one item
  }
  if (max_m < kA16MinRows || !device_info().a16 || (items > 1 && !kGroupedA16<Op>)) {
    if constexpr (kRowNorm<Op>) {
      if (cudaError_t e = row_rstd<Op::K>(op.row_norm.x, max_m, op.row_norm.eps, op.row_norm.rstd, s)) return e;
    }
    return gemm_run<Op, false>(op, items, max_m, n_cols, nullptr, s);
  }
  gemm_narrow_a_kernel<Op><<<dim3(max_m, items), 256, 0, s>>>(op, a16_scratch);
  if (cudaError_t e = cudaGetLastError()) return e;
  return gemm_run<Op, true>(op, items, max_m, n_cols, a16_scratch, s);
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
 * Prefill in f32 (f32 KV caches, or head dims that are not whole mma steps; 16-bit caches take
 * attention_flash_prefill_kernel below): block (query tile, kv head) holds BQ tokens x GROUP heads of queries and streams the
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

/**
 * Prefill on tensor cores, for 16-bit KV caches (flash-attention 2 with mma.sync m16n8k16). Block =
 * (query tile, KV head); its 64 query rows are (token, head) pairs of the GROUP heads that share the
 * KV head, so one read of a key tile serves the whole group. Each of the 4 warps owns 16 rows and
 * keeps them in registers: Q as A fragments (pre-scaled by log2(e)/sqrt(HEAD_DIM), so the softmax
 * runs on exp2), S = Q Kᵀ over 64 keys, the online softmax on the accumulators, and O += P V with
 * P narrowed to KV's type in place (an m16n8 accumulator pair is an m16k16 A fragment) and V read
 * by ldmatrix.trans. Key tiles are double-buffered by cp.async; keys past the tile's last query are
 * zero-filled, so a masked score multiplies a finite value. Numerics: Q and P are rounded to KV's
 * 16-bit type (relative error ~2^-9 each), scores and sums are f32.
 */
template <int HEAD_DIM, int GROUP>
struct FlashTile {
  static constexpr int ROWS = 64, WARPS = 4, KEYS = 64;
  static constexpr int BQ = ROWS / GROUP;       // tokens per block (rows past BQ * GROUP idle)
  static constexpr int LD = HEAD_DIM + 8;       // padded key/value row: fragment loads and ldmatrix rows hit distinct banks
  static constexpr size_t smem_bytes() { return size_t(2) * 2 * KEYS * LD * sizeof(uint16_t); }
};
/** Whether the prefill attention of these shapes runs on tensor cores (else attention_prefill_kernel). */
template <typename KV, int HEAD_DIM, int GROUP>
constexpr bool kFlashPrefill = kTensorCores<KV> && HEAD_DIM % 16 == 0 && HEAD_DIM <= 128 && GROUP <= 64;

template <int HEAD_DIM, int GROUP, int N_KV_HEADS, int WINDOW, int KV_SLOTS, typename KV>
__global__ void __launch_bounds__(128) attention_flash_prefill_kernel(const float* __restrict__ q /*[T, N_HEADS * HEAD_DIM]*/, int T,
                                                                      const KV* __restrict__ k_cache, const KV* __restrict__ v_cache,
                                                                      const int32_t* __restrict__ pos0, float* __restrict__ out) {
  using Tile = FlashTile<HEAD_DIM, GROUP>;
  constexpr int KV_DIM = N_KV_HEADS * HEAD_DIM, Q_DIM = N_KV_HEADS * GROUP * HEAD_DIM;
  constexpr int KEYS = Tile::KEYS, LD = Tile::LD, DK = HEAD_DIM / 16, DN = HEAD_DIM / 8, NF = KEYS / 8;
  constexpr int CHUNKS = HEAD_DIM / 8;  // 16-byte chunks per key row
  extern __shared__ float4 attn_smem[];
  uint16_t* ks = reinterpret_cast<uint16_t*>(attn_smem);  // [2][KEYS][LD]
  uint16_t* vs = ks + 2 * KEYS * LD;                      // [2][KEYS][LD]
  // Last query tiles first: they see the most keys, so the short early tiles fill the tail of the grid.
  const int g = blockIdx.y, t0 = (gridDim.x - 1 - blockIdx.x) * Tile::BQ, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int qr = lane >> 2, qc = 2 * (lane & 3);  // fragment row (and row + 8) and column pair of this lane
  const int tn = min(Tile::BQ, T - t0);
  const int p_first = *pos0 + t0, p_last = p_first + tn - 1;
  const int lo = WINDOW > 0 ? max(0, p_first - WINDOW + 1) : 0;

  auto load_tile = [&](int buf, int kt) {
    for (int idx = threadIdx.x; idx < 2 * KEYS * CHUNKS; idx += blockDim.x) {
      const int which = idx / (KEYS * CHUNKS), j = (idx / CHUNKS) % KEYS, c = idx % CHUNKS;
      const int kp = kt + j;
      const KV* cache = which == 0 ? k_cache : v_cache;
      const bool ok = kp <= p_last;
      const KV* src = ok ? cache + (int64_t(kp) % KV_SLOTS) * KV_DIM + g * HEAD_DIM + c * 8 : cache;
      cp_async16((which == 0 ? ks : vs) + (buf * KEYS + j) * LD + c * 8, src, ok ? 16 : 0);
    }
  };
  load_tile(0, lo);
  cp_async_commit();

  // This lane's two rows (qr and qr + 8 of the warp's 16): token and head, and whether they exist.
  int row_pos[2];
  bool row_live[2];
  uint32_t qf[DK][4];
  const float qscale = 1.4426950408889634f / sqrtf(float(HEAD_DIM));
#pragma unroll
  for (int h2 = 0; h2 < 2; ++h2) {
    const int r = warp * 16 + qr + 8 * h2, t = t0 + r / GROUP;
    row_live[h2] = r < Tile::BQ * GROUP && t < T;
    row_pos[h2] = p_first + r / GROUP;
    const float* qrow = q + int64_t(t) * Q_DIM + (g * GROUP + r % GROUP) * HEAD_DIM;
#pragma unroll
    for (int kc = 0; kc < DK; ++kc) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int d = 16 * kc + 8 * half + qc;
        const float2 v = row_live[h2] ? *reinterpret_cast<const float2*>(qrow + d) : make_float2(0.f, 0.f);
        qf[kc][h2 + 2 * half] = pack2<KV>(v.x * qscale, v.y * qscale);  // a0: (row, k), a1: (row + 8, k), a2/a3: k + 8
      }
    }
  }

  float o[DN][4];
#pragma unroll
  for (int i = 0; i < DN; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // l: this lane's columns only, summed over the quad at the end

  int buf = 0;
  for (int kt = lo; kt <= p_last; kt += KEYS, buf ^= 1) {
    __syncthreads();  // every warp is done with the other buffer (the previous tile)
    if (kt + KEYS <= p_last) load_tile(buf ^ 1, kt + KEYS);
    cp_async_commit();
    cp_async_wait<1>();  // this tile's copies (all but the newest group) have landed
    __syncthreads();     // ... everyone's
    const uint16_t* kb = ks + buf * KEYS * LD;
    const uint16_t* vb = vs + buf * KEYS * LD;

    float s[NF][4];
#pragma unroll
    for (int nf = 0; nf < NF; ++nf) {
      s[nf][0] = s[nf][1] = s[nf][2] = s[nf][3] = 0.f;
      const uint16_t* krow = kb + (nf * 8 + qr) * LD + qc;
#pragma unroll
      for (int kc = 0; kc < DK; ++kc) {
        const uint32_t b[2] = {*reinterpret_cast<const uint32_t*>(krow + 16 * kc), *reinterpret_cast<const uint32_t*>(krow + 16 * kc + 8)};
        mma16816<KV>(s[nf], qf[kc], b);
      }
    }
    // Mask (causal and window), then the online softmax of rows qr (i = 0, 1) and qr + 8 (i = 2, 3).
#pragma unroll
    for (int h2 = 0; h2 < 2; ++h2) {
      const int p = row_pos[h2];
      float mx = -INFINITY;
#pragma unroll
      for (int nf = 0; nf < NF; ++nf)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int kp = kt + nf * 8 + qc + e;
          const bool visible = kp <= p && (WINDOW == 0 || kp > p - WINDOW);
          float& x = s[nf][2 * h2 + e];
          x = visible ? x : -INFINITY;
          mx = fmaxf(mx, x);
        }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[h2], mx);
      const float base = m_new == -INFINITY ? 0.f : m_new;  // a row with nothing visible yet keeps p = 0
      const float corr = exp2f(m[h2] - base);
      m[h2] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int nf = 0; nf < NF; ++nf)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float& x = s[nf][2 * h2 + e];
          x = exp2f(x - base);
          sum += x;
        }
      l[h2] = l[h2] * corr + sum;
#pragma unroll
      for (int dn = 0; dn < DN; ++dn) o[dn][2 * h2] *= corr, o[dn][2 * h2 + 1] *= corr;
    }
    // O += P V, 16 keys at a time: accumulator tiles 2j and 2j + 1 are the A fragment of keys 16j..16j+15.
#pragma unroll
    for (int j = 0; j < KEYS / 16; ++j) {
      const uint32_t a[4] = {pack2<KV>(s[2 * j][0], s[2 * j][1]), pack2<KV>(s[2 * j][2], s[2 * j][3]),
                             pack2<KV>(s[2 * j + 1][0], s[2 * j + 1][1]), pack2<KV>(s[2 * j + 1][2], s[2 * j + 1][3])};
#pragma unroll
      for (int dn = 0; dn < DN; dn += 2) {
        // Lanes 0-15 address keys 16j + (lane & 15) at dims 8 dn, lanes 16-31 the same keys at dims 8 (dn + 1).
        uint32_t b[4];
        ldmatrix_x4_trans(b, vb + (16 * j + (lane & 15)) * LD + 8 * (dn + (lane >> 4)));
        const uint32_t b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
        mma16816<KV>(o[dn], a, b0);
        mma16816<KV>(o[dn + 1], a, b1);
      }
    }
  }
  cp_async_wait<0>();  // no copy may still target shared memory when the block exits

#pragma unroll
  for (int h2 = 0; h2 < 2; ++h2) {
    float sum = l[h2];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    if (!row_live[h2]) continue;
    const int r = warp * 16 + qr + 8 * h2, t = t0 + r / GROUP;
    float* orow = out + int64_t(t) * Q_DIM + (g * GROUP + r % GROUP) * HEAD_DIM;
    const float inv = 1.0f / sum;
#pragma unroll
    for (int dn = 0; dn < DN; ++dn) *reinterpret_cast<float2*>(orow + 8 * dn + qc) = make_float2(o[dn][2 * h2] * inv, o[dn][2 * h2 + 1] * inv);
  }
}

}  // namespace mc
