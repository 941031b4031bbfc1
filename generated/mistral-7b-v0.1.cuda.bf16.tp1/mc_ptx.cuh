// Every PTX instruction the CUDA kernels use, one small function each: the backend's only inline
// assembly. Not rendered: copied next to the generated sources and included by mc_cuda.cuh.
// test/cuda/emu/mc_ptx.cuh implements the same functions on the CPU (the emulator that runs the
// kernels in CI, where there is no GPU), so a new instruction goes here and there, nowhere else.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

// wgmma exists only in code built for sm_90a (its "a" features); elsewhere gemm_wgmma_kernel traps.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define MC_WGMMA_ENABLED 1
#endif

namespace mc {

/** 16 bytes of weights that are read once: no L1 allocation, so they do not evict activations. */
__device__ __forceinline__ uint4 load_stream(const void* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

/**
 * Tells the compiler the loaded value is read and written here, so that every load of a batch is
 * issued before this point: without it, a load whose value is only stored behind a branch may be
 * sunk into that branch, after the loads of the batch have been waited for. Emits no instruction.
 */
__device__ __forceinline__ void keep_loaded(float4& v) { asm volatile("" : "+f"(v.x), "+f"(v.y), "+f"(v.z), "+f"(v.w)); }

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
 * Programmatic dependent launch (sm_90+): lets the next kernel, if it was launched with the PDL
 * attribute, launch once every block of this one has called this or exited (the first call of a
 * block counts; later ones do nothing). It says nothing of this kernel's writes: the next one
 * still waits for them in wait_for_previous_kernel(). Without it a block counts when it exits.
 */
__device__ __forceinline__ void let_next_kernel_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/**
 * A barrier of every thread of a one-dimensional grid launched cooperatively (all its blocks resident
 * at once): what any block wrote before it, every block reads after it. `arrivals` is one counter
 * for as many such barriers and launches as run one after another; it starts at 0 and never needs
 * resetting: each barrier adds exactly 2^31 to it (block 0 adds 2^31 - (gridDim.x - 1), the others 1),
 * so its top bit flips when the last block arrives, and each block's thread 0 polls for that flip.
 */
__device__ __forceinline__ void grid_barrier(unsigned* arrivals) {
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned add = blockIdx.x == 0 ? 0x80000000u - (gridDim.x - 1) : 1u;
    __threadfence();  // this block's writes (ordered before by __syncthreads) before its arrival
    const unsigned before = atomicAdd(arrivals, add);
    unsigned now;
    do asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(now) : "l"(arrivals) : "memory");
    while (((before ^ now) & 0x80000000u) == 0);
    __threadfence();
  }
  __syncthreads();
}

/**
 * A hint to bring [p, p + bytes) of global memory into L2, given by all lanes of a warp (p 16-byte
 * aligned, bytes a multiple of 16): nothing waits for it and a GPU may drop it. On sm_90 one lane
 * hands the whole range to the bulk-copy engine; elsewhere the lanes prefetch it an L2 sector (32
 * bytes) at a time, since a plain prefetch brings in a sector, not necessarily the 128-byte line.
 */
__device__ __forceinline__ void prefetch_l2_warp(const void* p, uint32_t bytes, int lane) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (lane == 0) asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(__cvta_generic_to_global(p)), "r"(bytes) : "memory");
#else
  const size_t g = __cvta_generic_to_global(p), first = g & ~size_t(31);  // every sector the range touches
  for (size_t a = first + 32u * unsigned(lane); a < g + bytes; a += 32u * 32u) asm volatile("prefetch.global.L2 [%0];" ::"l"(a));
#endif
}

// ---- thread-block clusters (sm_90+): the blocks of a cluster run at once and read each other's shared memory
// Only kernels launched with a cluster shape call these, and only on GPUs that have clusters (the
// host checks); the sm_80 build traps.
/** This block's rank in its cluster (%cluster_ctarank). */
__device__ __forceinline__ unsigned cluster_rank() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  unsigned r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
#else
  __trap();
  return 0;
#endif
}
/**
 * A barrier of every thread of every block of the cluster: shared-memory writes before it (release)
 * are seen by the cluster's reads after it (acquire). Every thread of the block must call it.
 */
__device__ __forceinline__ void cluster_sync() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
#else
  __trap();
#endif
}
/** The float at p's offset in the shared memory of block `rank` of this cluster (distributed shared memory). */
__device__ __forceinline__ float ld_shared_cluster(const float* p, unsigned rank) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const unsigned local = unsigned(__cvta_generic_to_shared(p));
  unsigned remote;
  float v;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(rank));
  asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(remote) : "memory");
  return v;
#else
  __trap();
  return 0.f;
#endif
}

// ---- cp.async: global -> shared copies that bypass registers, in per-thread commit groups ---------
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
  const unsigned s = unsigned(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }
/** Waits until at most N of this thread's committed cp.async groups are still in flight. */
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

template <typename W> __device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);
template <> __device__ __forceinline__ void mma16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <> __device__ __forceinline__ void mma16816<__half>(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// ---- ldmatrix -------------------------------------------------------------------------------------
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem_row) {
  const unsigned a = unsigned(__cvta_generic_to_shared(smem_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a) : "memory");
}

// ---- wgmma (sm_90a): warpgroup matrix multiply from shared memory --------------------------------
#ifdef MC_WGMMA_ENABLED
namespace wgmma {
__device__ __forceinline__ void fence_async_shared() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void warpgroup_arrive() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void commit_group() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void wait_group() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
/**
 * Tells the compiler every accumulator is read and written here, so that it neither moves a use of
 * them above a wait_group (the epilogue) nor copies them between registers while a wgmma group that
 * writes them is in flight (as CUTLASS's warpgroup_fence_operand does). Emits no instruction.
 */
__device__ __forceinline__ void fence_operands(float (&acc)[64]) {
#pragma unroll
  for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(acc[i])::"memory");
}

#define MC_WGMMA_M64N128K16(TYPE)                                                                                                        \
  asm volatile(                                                                                                                          \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                                                                                       \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." TYPE "." TYPE                                                                       \
      " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, " \
      "%27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, "    \
      "%52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"                                      \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]),        \
        "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),             \
        "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),             \
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]),             \
        "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]),             \
        "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]),             \
        "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])              \
      : "l"(a), "l"(b), "r"(1))

/** d (64 x 128 of this warpgroup, f32) += A (64 x 16) · B (128 x 16)ᵀ, both from shared memory by descriptor. */
template <typename W> __device__ __forceinline__ void mma_async(float (&d)[64], uint64_t a, uint64_t b);
template <> __device__ __forceinline__ void mma_async<__nv_bfloat16>(float (&d)[64], uint64_t a, uint64_t b) { MC_WGMMA_M64N128K16("bf16"); }
template <> __device__ __forceinline__ void mma_async<__half>(float (&d)[64], uint64_t a, uint64_t b) { MC_WGMMA_M64N128K16("f16"); }
#undef MC_WGMMA_M64N128K16
}  // namespace wgmma
#endif


}  // namespace mc
