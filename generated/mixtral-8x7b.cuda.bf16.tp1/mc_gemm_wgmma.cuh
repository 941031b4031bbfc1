// The prefill GEMM on Hopper's warpgroup tensor cores (wgmma, sm_90a only). Included by mc_gemm.cuh,
// whose gemm() picks it on an sm_90a device where it judges it faster (unless MC_CUDA_GEMM=mma); the
// mma.sync gemm_kernel stays the engine everywhere else. Same Op interface as gemm_kernel.
//
// Why a second engine: mma.sync issues one 16x8x16 product per warp instruction and needs every
// fragment loaded into registers first; wgmma has a warpgroup (4 warps) multiply a 64x128x16 step
// straight out of shared memory, asynchronously, which is how Hopper reaches its matrix rate.
//
// Shared-memory layout (PTX ISA, "wgmma shared memory matrix layout", K-major with the 128-byte
// swizzle): a tile of R rows x 64 sixteen-bit elements is R rows of 128 bytes; within each group of
// 8 rows (1024 bytes, the swizzle's period) the 16-byte chunk c of row r is stored at chunk c ^ (r % 8),
// so the 8 rows of a k-slice fall in 8 different bank groups. The descriptor gives the tile's start
// address, the stride between 8-row groups (1024 bytes) and the swizzle mode; a k-step of 16
// elements is the start address plus 32 bytes (the swizzle is applied to the address bits, so the
// tile must start 1024-byte aligned). test/cuda/wgmma_layout.cu replays this layout on the CPU.
#pragma once

#include <cstdint>

namespace mc {
namespace wgmma {

// Block tile: two warpgroups, each 64 rows of A x all BN columns; K in 64-element (128-byte) steps.
constexpr int BM = 128, BN = 128, BK = 64, THREADS = 256;
/** Shared-memory stages; LOOKAHEAD of them are being filled while one is read and one drains (see the loop). */
constexpr int STAGES = 5, LOOKAHEAD = STAGES - 2;
constexpr int A_BYTES = BM * BK * 2, B_BYTES = BN * BK * 2, STAGE_BYTES = A_BYTES + B_BYTES;
constexpr int A_LOADS = BM * BK / 4 / THREADS;  // float4 of A per thread per stage
constexpr int B_LOADS = BN * BK / 8 / THREADS;  // 16-byte copies of B per thread per stage
static_assert(A_LOADS * 4 * THREADS == BM * BK && B_LOADS * 8 * THREADS == BN * BK, "whole loads per thread");
// The descriptors say "base offset 0": every tile (each stage's A and B, the second warpgroup's A
// rows) must start on the swizzle's 1024-byte period; a K step is one 128-byte swizzled row.
static_assert(A_BYTES % 1024 == 0 && STAGE_BYTES % 1024 == 0 && (64 * BK * 2) % 1024 == 0, "tiles on 1024-byte boundaries");
static_assert(BK * 2 == 128 && BM == 2 * 64 && BN == 128, "the layout, the warpgroups and mma_async are written for m64n128, 64-element K steps");
static_assert(BM == BN, "A16 tiles are copied as B's are (b_row, b_chunk)");
/** Dynamic shared memory: the stages, plus slack to start them on a 1024-byte boundary. */
constexpr unsigned SMEM_BYTES = STAGES * STAGE_BYTES + 1024;

/** Byte offset of element (row, k < 64) of a 16-bit K-major tile with the 128-byte swizzle. */
__host__ __device__ constexpr uint32_t swizzled(int row, int k) {
  return uint32_t(row) * 128u + ((uint32_t((k >> 3) ^ row) & 7u) << 4) + uint32_t(k & 7) * 2u;
}

/**
 * wgmma shared-memory descriptor of a K-major, 128-byte-swizzled tile at shared address `addr`:
 * bits 0-13 address >> 4; 16-29 leading offset (unused with this swizzle; 1 by convention);
 * 32-45 stride between 8-row groups >> 4 (1024 bytes); 62-63 layout 1 = 128-byte swizzle.
 */
__host__ __device__ constexpr uint64_t descriptor(uint32_t addr) {
  return uint64_t((addr & 0x3FFFFu) >> 4) | (uint64_t(1) << 16) | (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}

/** The A element (row, k) that load j of thread tid fetches: 4 consecutive k, 16 threads a row. */
__host__ __device__ constexpr int a_row(int tid, int j) { return (tid + THREADS * j) / 16; }
__host__ __device__ constexpr int a_col(int tid, int j) { return 4 * ((tid + THREADS * j) % 16); }
/** The B row and 16-byte chunk that copy j of thread tid moves: 8 threads a 128-byte row (coalesced). */
__host__ __device__ constexpr int b_row(int tid, int j) { return (tid + THREADS * j) / 8; }
__host__ __device__ constexpr int b_chunk(int tid, int j) { return (tid + THREADS * j) % 8; }

/**
 * Accumulator i (0..63) of thread tid, as wgmma m64n128 with f32 accumulators lays it out: warp w of
 * the warpgroup holds rows 16w..16w+15 of its 64; registers 4j..4j+3 cover columns 8j..8j+7, two
 * per thread (lane % 4), row lane / 4 for the first pair and 8 rows lower for the second.
 */
__host__ __device__ constexpr int acc_row(int tid, int i) {
  return 64 * (tid / 128) + 16 * ((tid / 32) % 4) + (tid % 32) / 4 + 8 * ((i / 2) % 2);
}
__host__ __device__ constexpr int acc_col(int tid, int i) { return 8 * (i / 4) + 2 * (tid % 4) + (i % 2); }

}  // namespace wgmma

/**
 * C[m, n] = A[m, :] · B[n, :] like gemm_kernel (same Op, same epilogue calls), on wgmma: 2 warpgroups
 * of 64 rows x 128 columns. B (weights) streams in by cp.async, LOOKAHEAD stages ahead; A (f32, from
 * the Op) is loaded into registers a step ahead and narrowed into its stage at the end of the step,
 * or, with A16 (gemm_narrow_a_kernel wrote it to `a16`), copied by cp.async with B.
 * Stage reuse: step kt refills the buffer of step kt - 2, whose wgmma groups every warpgroup has
 * waited for (wait_group 1 at the end of step kt - 1) before this step's barrier, so one group of
 * wgmma is always in flight while the next stage is issued.
 */
template <class Op, bool A16>
__global__ void __launch_bounds__(wgmma::THREADS, 1) gemm_wgmma_kernel(const Op op, const uint16_t* __restrict__ a16) {
#ifdef MC_WGMMA_ENABLED
  using W = typename Op::W;
  using namespace wgmma;
  constexpr int K = Op::K, KT = (K + BK - 1) / BK;
  static_assert(K % 8 == 0, "weight rows are copied 8 elements (16 bytes) at a time");
  extern __shared__ float4 gemm_smem[];
  // The swizzle works on address bits: start the stages on a 1024-byte boundary.
  const uint32_t raw = uint32_t(__cvta_generic_to_shared(gemm_smem)), base = (raw + 1023u) & ~1023u;
  uint8_t* const smem = reinterpret_cast<uint8_t*>(gemm_smem) + (base - raw);
  auto a_tile = [&](int s) { return smem + s * STAGE_BYTES; };
  auto b_tile = [&](int s) { return smem + s * STAGE_BYTES + A_BYTES; };

  const int item = blockIdx.z;
  const int M = op.m_count(item);
  const int m0 = blockIdx.y * BM;
  if (m0 >= M) return;
  const int N = op.n_count();
  const int tid = threadIdx.x, wg = tid / 128;

  const W* brow[B_LOADS];
#pragma unroll
  for (int j = 0; j < B_LOADS; ++j) brow[j] = gemm_b_row<Op, BN>(op, item, b_row(tid, j), N);
  const W* const bdummy = op.b_row(item, 0, 0);
  auto load_b = [&](int s, int k0) {
#pragma unroll
    for (int j = 0; j < B_LOADS; ++j) {
      const int k = k0 + 8 * b_chunk(tid, j);
      const bool ok = brow[j] != nullptr && k < K;
      cp_async16(b_tile(s) + swizzled(b_row(tid, j), 8 * b_chunk(tid, j)), ok ? brow[j] + k : bdummy, ok ? 16 : 0);
    }
  };
  // A16 (gemm_narrow_a wrote A as W): copied like B, 8 threads a 128-byte row.
  const uint16_t* const a16_item = A16 ? a16 + int64_t(a16_first_row(op, item)) * K : nullptr;
  auto load_a16 = [&](int s, int k0) {
#pragma unroll
    for (int j = 0; j < B_LOADS; ++j) {
      const int m = m0 + b_row(tid, j), k = k0 + 8 * b_chunk(tid, j);
      const bool ok = m < M && k < K;
      cp_async16(a_tile(s) + swizzled(b_row(tid, j), 8 * b_chunk(tid, j)), ok ? a16_item + int64_t(m) * K + k : a16, ok ? 16 : 0);
    }
  };
  float4 areg[A_LOADS];
  auto load_a = [&](int k0) {
#pragma unroll
    for (int j = 0; j < A_LOADS; ++j) {
      const int m = m0 + a_row(tid, j), k = k0 + a_col(tid, j);
      areg[j] = m < M && k < K ? op.a(item, m, k) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
  };
  auto store_a = [&](int s) {
#pragma unroll
    for (int j = 0; j < A_LOADS; ++j) *reinterpret_cast<uint2*>(a_tile(s) + swizzled(a_row(tid, j), a_col(tid, j))) = pack4<W>(areg[j]);
  };

  float acc[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.f;

#pragma unroll
  for (int st = 0; st < LOOKAHEAD; ++st) {
    if (st < KT) {
      load_b(st, st * BK);
      if constexpr (A16) {
        load_a16(st, st * BK);
      } else {
        load_a(st * BK);
        store_a(st);
      }
    }
    cp_async_commit();  // one group per stage, empty or not, so that wait<LOOKAHEAD - 1> always means "stage kt landed"
  }
#pragma unroll 1
  for (int kt = 0; kt < KT; ++kt) {
    cp_async_wait<LOOKAHEAD - 1>();
    // This thread's cp.async data and A stores are ordinary (generic-proxy) writes; the tensor cores
    // read through the async proxy, so each writer fences before the barrier that publishes them.
    wgmma::fence_async_shared();
    __syncthreads();
    const int next = kt + LOOKAHEAD, s = kt % STAGES;
    if (next < KT) {
      load_b(next % STAGES, next * BK);
      if constexpr (A16) load_a16(next % STAGES, next * BK);
      else load_a(next * BK);
    }
    cp_async_commit();
    const uint32_t a_addr = uint32_t(__cvta_generic_to_shared(a_tile(s))) + wg * 64 * 128;  // this warpgroup's 64 rows
    const uint32_t b_addr = uint32_t(__cvta_generic_to_shared(b_tile(s)));
    wgmma::fence_operands(acc);
    wgmma::warpgroup_arrive();
#pragma unroll
    for (int ks = 0; ks < BK / 16; ++ks) wgmma::mma_async<W>(acc, descriptor(a_addr + 32 * ks), descriptor(b_addr + 32 * ks));
    wgmma::commit_group();
    if constexpr (!A16) {
      if (next < KT) store_a(next % STAGES);  // the buffer of step kt - 2 (see above)
    }
    wgmma::wait_group<1>();
    wgmma::fence_operands(acc);
  }
  wgmma::wait_group<0>();
  wgmma::fence_operands(acc);
  cp_async_wait<0>();

#pragma unroll
  for (int i = 0; i < 64; i += 2) {
    const int m = m0 + acc_row(tid, i);
    if (m >= M) continue;
    if constexpr (Op::PAIRED) {
      // Column blocks 8j (w1) and 8j + 8 (w3) are the same 8 units; i % 8 < 4 is the w1 half of a pair.
      if ((i / 4) % 2 == 0) {
        const int u = blockIdx.x * (BN / 2) + (i / 8) * 8 + 2 * (tid % 4);
        if (u < N) op.store_pair(item, m, u, acc[i], acc[i + 1], acc[i + 4], acc[i + 5]);
      }
    } else {
      const int n = blockIdx.x * BN + acc_col(tid, i);
      if (n < N) op.store(item, m, n, acc[i], acc[i + 1]);
    }
  }
#else
  __trap();  // launched only where wgmma_built says this code has the engine
#endif
}

}  // namespace mc
