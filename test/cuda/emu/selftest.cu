// Kernels with one deliberate bug each, for test/cuda/emulator.test.ts: the emulator must report
// every one of them (and pass the correct variant), so that a change to the emulator cannot quietly
// stop it from seeing what it exists to see. Built like the kernels (emulate.ts), run as
//   selftest <case>   exit 0: the kernel ran and its result is right; 1: wrong result; else the emulator's failure.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "mc_ptx.cuh"

namespace {

/** Copies 256 floats through shared memory by cp.async; `wait` false skips the wait (a race on a GPU). */
__global__ void __launch_bounds__(64) staged_copy(const float* in, float* out, bool wait) {
  extern __shared__ float4 smem[];
  float* s = reinterpret_cast<float*>(smem);
  mc::cp_async16(s + 4 * threadIdx.x, in + 4 * threadIdx.x, 16);
  mc::cp_async_commit();
  if (wait) mc::cp_async_wait<0>();
  __syncthreads();
  for (int i = 0; i < 4; ++i) out[4 * threadIdx.x + i] = s[4 * ((threadIdx.x + 1) % 64) + i];
  if (!wait) mc::cp_async_wait<0>();
}

/** Sums a warp's lanes; `partial` lets odd lanes return first (a full-mask shuffle then has exited lanes). */
__global__ void __launch_bounds__(32) warp_total(float* out, bool partial) {
  if (partial && (threadIdx.x & 1)) return;
  float v = float(threadIdx.x);
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x == 0) out[0] = v;
}

/** Half of each warp at a barrier, the other half in a full-mask shuffle that waits for them: a deadlock. */
__global__ void __launch_bounds__(64) divergent_barrier(float* out) {
  if ((threadIdx.x & 31) < 16) __syncthreads();
  else out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.f, 1);
}

/** Reads one float past the end of its input. */
__global__ void __launch_bounds__(32) read_past(const float* in, float* out, int n) { out[threadIdx.x] = in[n + threadIdx.x]; }

__global__ void __launch_bounds__(32) big_smem(float* out) {
  extern __shared__ float4 smem[];
  out[threadIdx.x] = reinterpret_cast<float*>(smem)[threadIdx.x];
}

/** Block b marks itself done, then copies block b - 1's mark: nothing orders the blocks of one launch. */
__global__ void __launch_bounds__(32) read_other_block(float* out) {
  if (threadIdx.x != 0) return;
  out[blockIdx.x] = 1.f;
  if (blockIdx.x > 0) out[gridDim.x + blockIdx.x] = out[blockIdx.x - 1];
}

/** Reads its static shared memory before writing it: junk in every block on a GPU, never the previous block's 7s. */
__global__ void __launch_bounds__(32) read_static_smem(float* out) {
  __shared__ float s[32];
  out[blockIdx.x * 32 + threadIdx.x] = s[threadIdx.x];
  s[threadIdx.x] = 7.f;
}

/**
 * Before a grid barrier each block marks itself and keeps its index in dynamic shared memory; after
 * it, each copies the next block's mark and its own kept index. `early_exit`: block 0 returns before
 * the barrier (on a GPU the others would wait for ever).
 */
__global__ void __launch_bounds__(32) grid_exchange(float* out, bool early_exit) {
  extern __shared__ float4 smem[];
  float* s = reinterpret_cast<float*>(smem);
  const int b = int(blockIdx.x), n = int(gridDim.x);
  if (early_exit && b == 0) return;
  if (threadIdx.x == 0) out[b] = float(b + 1), s[0] = float(b);
  __syncthreads();
  mc_emu::grid_sync();
  if (threadIdx.x == 0) out[n + b] = out[(b + 1) % n], out[2 * n + b] = s[0];
}

/** grid_exchange over `blocks` blocks, launched cooperatively or not: 0 if every block saw the next one's mark and kept its shared memory. */
int grid_barrier(int blocks, bool cooperative, bool early_exit) {
  float* d = nullptr;
  cudaMalloc(&d, 3 * blocks * sizeof(float));
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(unsigned(blocks));
  config.blockDim = dim3(32);
  config.dynamicSmemBytes = 16;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeCooperative;
  attr[0].val.cooperative = 1;
  config.attrs = attr;
  config.numAttrs = cooperative ? 1 : 0;
  const cudaError_t e = cudaLaunchKernelEx(&config, grid_exchange, d, early_exit);
  if (e == cudaErrorCooperativeLaunchTooLarge) return 4;
  std::vector<float> out(3 * size_t(blocks));
  cudaMemcpy(out.data(), d, out.size() * sizeof(float), cudaMemcpyDeviceToHost);
  for (int b = 0; b < blocks; ++b)
    if (out[size_t(blocks + b)] != float((b + 1) % blocks + 1) || out[size_t(2 * blocks + b)] != float(b)) return 1;
  return 0;
}

/**
 * Each block of a cluster keeps its rank in dynamic shared memory; after a cluster barrier it reads
 * the next rank's through distributed shared memory. `final_sync` false: no barrier before exit (a
 * block may then read the shared memory of one that has exited); `early_exit`: rank 0 returns before
 * the first barrier (the others go on: a cluster barrier waits for threads that have not exited; the
 * last rank then reads rank 0's shared memory after it exited).
 */
__global__ void __launch_bounds__(32) cluster_exchange(float* out, bool final_sync, bool early_exit) {
  extern __shared__ float4 smem[];
  float* s = reinterpret_cast<float*>(smem);
  const unsigned rank = mc::cluster_rank();
  if (early_exit && rank == 0) return;
  if (threadIdx.x == 0) s[0] = float(rank) + 0.5f;
  mc::cluster_sync();
  const unsigned size = unsigned(out[0]);  // the cluster's blocks, as the host launched them
  if (threadIdx.x == 0) out[1 + blockIdx.x] = mc::ld_shared_cluster(s, (rank + 1) % size);
  if (final_sync) mc::cluster_sync();
}

/** cluster_exchange over 32 blocks in clusters of `size`: 0 if every block read its neighbour's rank; 4 if the launch was refused. */
int cluster_run(unsigned size, bool non_portable, bool final_sync, bool early_exit) {
  std::vector<float> host(33, 0.f);
  host[0] = float(size);
  float* d = nullptr;
  cudaMalloc(&d, host.size() * sizeof(float));
  cudaMemcpy(d, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice);
  if (non_portable) cudaFuncSetAttribute(cluster_exchange, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(32);
  config.blockDim = dim3(32);
  config.dynamicSmemBytes = 16;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = size;
  attr[0].val.clusterDim.y = attr[0].val.clusterDim.z = 1;
  config.attrs = attr;
  config.numAttrs = 1;
  int clusters = -1;
  cudaOccupancyMaxActiveClusters(&clusters, cluster_exchange, &config);
  const cudaError_t e = cudaLaunchKernelEx(&config, cluster_exchange, d, final_sync, early_exit);
  if (e == cudaErrorInvalidClusterSize) return clusters == 0 ? 4 : 2;  // refused, as the occupancy query foretold
  if (e != cudaSuccess || clusters <= 0) return 2;
  cudaMemcpy(host.data(), d, host.size() * sizeof(float), cudaMemcpyDeviceToHost);
  for (unsigned b = 0; b < 32; ++b)
    if (host[1 + b] != float((b % size + 1) % size) + 0.5f) return 1;
  return 0;
}

std::vector<float> iota(int n) {
  std::vector<float> v(n);
  for (int i = 0; i < n; ++i) v[i] = float(i) + 0.5f;
  return v;
}

template <typename T> T* device(const std::vector<T>& h) {
  T* d = nullptr;
  cudaMalloc(&d, h.size() * sizeof(T));
  cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
  return d;
}

int staged(bool wait) {
  const auto in = iota(256);
  float* d_in = device(in);
  float* d_out = device(std::vector<float>(256, -1.f));
  staged_copy<<<1, 64, 256 * sizeof(float)>>>(d_in, d_out, wait);
  if (cudaGetLastError() != cudaSuccess) return 2;
  std::vector<float> out(256);
  cudaMemcpy(out.data(), d_out, sizeof(float) * 256, cudaMemcpyDeviceToHost);
  for (int t = 0; t < 64; ++t)
    for (int i = 0; i < 4; ++i)
      if (out[4 * t + i] != in[4 * ((t + 1) % 64) + i]) return 1;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const char* c = argc > 1 ? argv[1] : "";
  float* d_out = device(std::vector<float>(64, 0.f));
  if (std::strcmp(c, "cp-async-waited") == 0) return staged(true);
  if (std::strcmp(c, "cp-async-not-waited") == 0) {
    // Copies land at issue or at their wait, at random per copy: over a few runs some land late.
    for (int run = 0; run < 8; ++run)
      if (int r = staged(false)) return r;
    return 0;
  }
  if (std::strcmp(c, "read-other-block") == 0) {
    // Blocks run in a random order: over a few launches some block runs before the one it reads.
    for (int run = 0; run < 4; ++run) {
      float* d = device(std::vector<float>(16, 0.f));
      read_other_block<<<8, 32>>>(d);
      std::vector<float> out(16);
      cudaMemcpy(out.data(), d, sizeof(float) * 16, cudaMemcpyDeviceToHost);
      for (int b = 1; b < 8; ++b)
        if (out[8 + b] != 1.f) return 1;
    }
    return 0;
  }
  if (std::strcmp(c, "static-smem-junk") == 0) {
    float* d = device(std::vector<float>(128, 0.f));
    read_static_smem<<<4, 32>>>(d);
    std::vector<float> out(128);
    cudaMemcpy(out.data(), d, sizeof(float) * 128, cudaMemcpyDeviceToHost);
    for (float v : out)
      if (v == 7.f || v == 0.f) return 1;  // the previous block's value, or never-written zeros
    return 0;
  }
  if (std::strcmp(c, "warp-full") == 0 || std::strcmp(c, "warp-partial") == 0) {
    warp_total<<<1, 32>>>(d_out, std::strcmp(c, "warp-partial") == 0);
    float v = 0.f;
    cudaMemcpy(&v, d_out, sizeof v, cudaMemcpyDeviceToHost);
    return v == 496.f ? 0 : 1;  // 0 + 1 + ... + 31
  }
  if (std::strcmp(c, "divergent-barrier") == 0) {
    divergent_barrier<<<1, 64>>>(d_out);
    return 0;
  }
  if (std::strcmp(c, "read-past-end") == 0) {
    float* d_in = device(iota(1024));  // a whole page: the next one is the guard page
    read_past<<<1, 32>>>(d_in, d_out, 1024);
    return 0;
  }
  if (std::strcmp(c, "smem-over-48k") == 0) {
    big_smem<<<1, 32, 64 * 1024>>>(d_out);
    return cudaGetLastError() == cudaErrorInvalidValue ? 4 : 0;  // 4: refused, as a GPU refuses it
  }
  if (std::strcmp(c, "grid-barrier") == 0) {
    // blocks pass the barrier in a different order each time
    for (int run = 0; run < 4; ++run)
      if (int r = grid_barrier(8, true, false)) return r;
    return 0;
  }
  if (std::strcmp(c, "grid-barrier-not-cooperative") == 0) return grid_barrier(8, false, false);
  if (std::strcmp(c, "grid-barrier-early-exit") == 0) return grid_barrier(8, true, true);
  // More blocks than the emulated device holds at once (32 a multiprocessor of 8; MC_EMU_SMS unset).
  if (std::strcmp(c, "grid-too-large") == 0) return grid_barrier(8 * 32 + 1, true, false);
  if (std::strcmp(c, "cluster") == 0) {
    // clusters pass their barriers in a different order each time; 16 blocks with the non-portable opt-in
    for (int run = 0; run < 4; ++run)
      if (int r = cluster_run(run % 2 == 0 ? 8 : 4, false, true, false)) return r;
    return cluster_run(16, true, true, false);
  }
  if (std::strcmp(c, "cluster-16-portable") == 0) return cluster_run(16, false, true, false);
  if (std::strcmp(c, "cluster-no-final-sync") == 0) return cluster_run(8, false, false, false);
  if (std::strcmp(c, "cluster-early-exit") == 0) return cluster_run(8, false, true, true);
  std::fprintf(stderr, "selftest: unknown case %s\n", c);
  return 2;
}
