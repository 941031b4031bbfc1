// The emulator's templates/include/mc_ptx.cuh: the same functions, carried out on the CPU by
// mc_emu.hpp (warp-wide instructions as collectives of the warp's fibers). Semantics follow the
// PTX ISA, not the kernels' comments: the fragment layouts and the descriptor decoding are written
// out again in mc_emu.hpp from the ISA's tables.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cuda_runtime.h"

// The emulator runs the sm_90a code: wgmma included (gemm() picks it by its launch rule unless MC_CUDA_GEMM=mma).
#define MC_WGMMA_ENABLED 1
// The emulator logs L2 prefetches (mc_emu::take_prefetches), which kernel checks may compare.
#define MC_EMU_LOGS_PREFETCHES 1

namespace mc {

/** ld.global.nc: a plain load here (the emulator has no caches). */
inline uint4 load_stream(const void* p) { return *static_cast<const uint4*>(p); }

/** Compiler-only in CUDA (keeps a batch of loads together); the emulator's loads complete where they are issued. */
inline void keep_loaded(float4&) {}

/**
 * griddepcontrol.wait: kernels run one after another, so the previous one has always finished; the
 * emulator checks instead that nothing before it touched what that kernel did (mc_emu.hpp, the PDL check).
 */
inline void wait_for_previous_kernel() { mc_emu::pdl_wait(); }
/** griddepcontrol.launch_dependents: the next kernel starts when this one has finished anyway; checked to come after the wait. */
inline void let_next_kernel_launch() { mc_emu::pdl_trigger(); }

/**
 * cp.async.bulk.prefetch.L2 (lane 0 of the warp, as on sm_90): no cache here, so only the ISA's
 * rules are checked (16-byte alignment, a multiple of 16 bytes) and that the range is device memory
 * inside one allocation; the range is logged (mc_emu::take_prefetches) for checks of what is hinted.
 */
inline void prefetch_l2_warp(const void* p, uint32_t bytes, int lane) {
  if ((reinterpret_cast<uintptr_t>(p) & 15u) != 0 || (bytes & 15u) != 0) mc_emu::fail("cp.async.bulk.prefetch.L2 with an address or size that is not a multiple of 16 bytes");
  if (bytes == 0) mc_emu::fail("cp.async.bulk.prefetch.L2 of 0 bytes");
  if (!mc_emu::in_device_allocation(p, bytes)) mc_emu::fail("an L2 prefetch of a range outside every device allocation");
  if (lane != 0) return;
  std::lock_guard<std::mutex> lock(mc_emu::prefetch_log_mutex());
  mc_emu::prefetch_log().emplace_back(static_cast<const char*>(p), size_t(bytes));
}

/**
 * The grid barrier of a cooperative launch: the counter moves as on a GPU (block 0 adds 2^31 -
 * (gridDim.x - 1), the others 1), but the threads wait in mc_emu::grid_sync (a poll would never see
 * another fiber move); once the whole grid is there, the counter's top bit must have flipped.
 */
inline void grid_barrier(unsigned* arrivals) {
  __syncthreads();
  unsigned before = 0;
  if (threadIdx.x == 0) before = atomicAdd(arrivals, blockIdx.x == 0 ? 0x80000000u - (gridDim.x - 1) : 1u);
  mc_emu::grid_sync();
  if (threadIdx.x == 0 && ((before ^ *arrivals) & 0x80000000u) == 0) mc_emu::fail("grid_barrier: the whole grid arrived, but the counter's top bit did not flip (a counter that did not start at 0?)");
  __syncthreads();
}

// ---- thread-block clusters (sm_90) -------------------------------------------------------------------
/** %cluster_ctarank: this block's rank in its cluster. */
inline unsigned cluster_rank() { return mc_emu::cluster_rank(); }
/** barrier.cluster.arrive.release + wait.acquire: every thread of the cluster's blocks, as mc_emu::cluster_sync holds them. */
inline void cluster_sync() { mc_emu::cluster_sync(); }
/** mapa + ld.shared::cluster.f32: the float at p's offset in the shared memory of block `rank` of the cluster. */
inline float ld_shared_cluster(const float* p, unsigned rank) {
  if ((reinterpret_cast<uintptr_t>(p) & 3u) != 0) mc_emu::fail("ld.shared::cluster.f32 at an address that is not 4-byte aligned");
  float v;
  std::memcpy(&v, mc_emu::cluster_smem(p, rank, sizeof v), sizeof v);
  return v;
}

// ---- cp.async ----------------------------------------------------------------------------------------
/** Queued in this thread's open group; the copy happens at issue or at the wait that covers it (chosen at random). */
inline void cp_async16(void* smem, const void* gmem, int src_bytes) {
  mc_emu::State& s = mc_emu::state();
  const uint32_t addr = mc_emu::smem_address(smem);
  mc_emu::smem_pointer(addr, 16);  // inside the dynamic shared memory
  if ((addr & 15u) != 0 || (reinterpret_cast<uintptr_t>(gmem) & 15u) != 0) mc_emu::fail("cp.async with an address that is not 16-byte aligned");
  if (src_bytes < 0 || src_bytes > 16) mc_emu::fail("cp.async source size outside 0..16");
  const mc_emu::Copy c{smem, gmem, src_bytes};
  // Before griddepcontrol.wait a GPU may read the source at once, whenever this copy lands here.
  if (s.pre_wait && src_bytes > 0) (void)*static_cast<const volatile char*>(gmem);
  if (s.rng() & 1) {
    c.run();  // landed early: a reader that skipped its wait could not tell
    return;
  }
  s.current->cp_open.push_back(c);
}
inline void cp_async_commit() {
  mc_emu::Fiber& f = *mc_emu::state().current;
  f.cp_groups.push_back(std::move(f.cp_open));
  f.cp_open.clear();
}
inline void cp_async_wait_all() { mc_emu::run_pending_copies(*mc_emu::state().current, 0); }
template <int N> inline void cp_async_wait() { mc_emu::run_pending_copies(*mc_emu::state().current, N); }

// ---- mma.sync / ldmatrix: warp collectives --------------------------------------------------------------
template <typename W> inline void mma16816(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  static_assert(std::is_same<W, __nv_bfloat16>::value || std::is_same<W, __half>::value, "mma.sync operands are bf16 or f16");
  mc_emu::Fiber& f = mc_emu::warp_collective(std::is_same<W, __nv_bfloat16>::value ? mc_emu::Op::mma_bf16 : mc_emu::Op::mma_f16);
  std::memcpy(f.in, a, 16);
  std::memcpy(f.in + 4, b, 8);
  std::memcpy(f.in + 6, c, 16);
  mc_emu::yield(mc_emu::Wait::warp);
  std::memcpy(c, f.out, 16);
}
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem_row) {
  mc_emu::Fiber& f = mc_emu::warp_collective(mc_emu::Op::ldmatrix_x4_trans);
  f.addr = smem_row;
  mc_emu::yield(mc_emu::Wait::warp);
  std::memcpy(r, f.out, 16);
}

// ---- wgmma: warpgroup collectives ----------------------------------------------------------------------
namespace wgmma {
inline void group_op(mc_emu::Op op, uint32_t n = 0, float* acc = nullptr, uint64_t a = 0, uint64_t b = 0) {
  mc_emu::Fiber& f = *mc_emu::state().current;
  f.op = op, f.in[0] = n, f.acc = acc, f.desc[0] = a, f.desc[1] = b;
  mc_emu::yield(mc_emu::Wait::group);
}
/** fence.proxy.async: the emulator has one proxy (nothing to order). */
inline void fence_async_shared() {}
inline void warpgroup_arrive() { group_op(mc_emu::Op::wg_fence); }
inline void commit_group() { group_op(mc_emu::Op::wg_commit); }
template <int N> inline void wait_group() { group_op(mc_emu::Op::wg_wait, uint32_t(N)); }
inline void fence_operands(float (&)[64]) {}
/** Recorded at issue; the accumulators are read and written when a wait_group retires its group. */
template <typename W> inline void mma_async(float (&d)[64], uint64_t a, uint64_t b) {
  static_assert(std::is_same<W, __nv_bfloat16>::value || std::is_same<W, __half>::value, "wgmma operands are bf16 or f16");
  group_op(std::is_same<W, __nv_bfloat16>::value ? mc_emu::Op::wg_mma_bf16 : mc_emu::Op::wg_mma_f16, 0, d, a, b);
}
}  // namespace wgmma

}  // namespace mc
