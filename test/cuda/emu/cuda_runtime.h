// Stands in for CUDA's cuda_runtime.h when the kernels are built for the emulator (g++, no GPU;
// test/cuda/emu/emulate.ts puts this directory first on the include path). The types and the
// runtime's declarations are CUDA's own headers (cuda_runtime_api.h, vector_functions.h); this file
// defines the part of the runtime the kernels and their checks call, on the CPU, the device-side
// built-ins (__syncthreads, __shfl_*_sync, threadIdx, ...) and what __shared__ means here: a
// function's `static thread_local` (an OS thread runs one block at a time, so its statics are that
// block's shared memory; tensor-parallel ranks run on threads of their own).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <vector_functions.h>

#include <chrono>
#include <cmath>
#include <cstring>

#include "mc_emu.hpp"

#undef __shared__
#define __shared__ static thread_local
#define __launch_bounds__(...)
#define __CUDACC_EMULATED__ 1

// ---- device built-ins -----------------------------------------------------------------------------
inline void __syncthreads() { mc_emu::yield(mc_emu::Wait::block); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  if (mask != 0xffffffffu) mc_emu::fail("__syncwarp with a partial mask is not emulated");
  mc_emu::warp_collective(mc_emu::Op::syncwarp);
  mc_emu::yield(mc_emu::Wait::warp);
}
inline void __threadfence() {}
[[noreturn]] inline void __trap() { mc_emu::fail("__trap()"); }

template <typename T>
T mc_emu_shfl(unsigned mask, T v, int src) {
  static_assert(sizeof(T) == 4, "the emulator shuffles 32-bit values");
  if (mask != 0xffffffffu) mc_emu::fail("__shfl_*_sync with a partial mask is not emulated");
  mc_emu::Fiber& f = mc_emu::warp_collective(mc_emu::Op::shfl);
  std::memcpy(&f.in[0], &v, 4);
  f.in[1] = uint32_t(src);
  mc_emu::yield(mc_emu::Wait::warp);
  T out;
  std::memcpy(&out, &f.out[0], 4);
  return out;
}
/** The lane of the running thread: its linear index in the block, mod 32 (also for 2-D and 3-D blocks). */
inline int mc_emu_lane() { return mc_emu::state().current->linear & 31; }
template <typename T> T __shfl_xor_sync(unsigned mask, T v, int lane_mask) { return mc_emu_shfl(mask, v, mc_emu_lane() ^ lane_mask); }
template <typename T> T __shfl_sync(unsigned mask, T v, int src_lane) { return mc_emu_shfl(mask, v, src_lane); }

inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
/** An OS thread runs its blocks one after another: an atomic is a plain read-modify-write. */
inline float atomicAdd(float* p, float v) {
  const float old = *p;
  *p = old + v;
  return old;
}
inline unsigned atomicAdd(unsigned* p, unsigned v) {
  const unsigned old = *p;
  *p = old + v;
  return old;
}
inline size_t __cvta_generic_to_shared(const void* p) { return mc_emu::smem_address(p); }
inline int max(int a, int b) { return a > b ? a : b; }
inline int min(int a, int b) { return a < b ? a : b; }

// ---- the runtime ------------------------------------------------------------------------------------
/** Synchronous calls are not allowed while a stream captures (CUDA fails them the same way). */
static bool mc_emu_capturing() { return mc_emu::state().capture != nullptr; }
/** Runs `op` now, or records it when `s` is the capturing stream. */
template <class F> static cudaError_t mc_emu_on_stream(cudaStream_t s, F op) {
  mc_emu::State& st = mc_emu::state();
  if (st.capture != nullptr && s == st.capture_stream) return st.capture->push_back([op]() { return op(), mc_emu::not_a_kernel(), cudaSuccess; }), cudaSuccess;
  if (st.capture != nullptr && s == nullptr) return cudaErrorStreamCaptureImplicit;
  return op(), mc_emu::not_a_kernel(), cudaSuccess;
}
using mc_emu_graph = std::vector<std::function<cudaError_t()>>;

extern "C" {
cudaError_t cudaGetLastError(void) {
  const cudaError_t e = mc_emu::state().last_error;
  mc_emu::state().last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError(void) { return mc_emu::state().last_error; }
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidClusterSize: return "invalid cluster size";
    default: return "unknown error (emulated runtime)";
  }
}
const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidClusterSize: return "cudaErrorInvalidClusterSize";
    default: return "cudaErrorUnknown";
  }
}
cudaError_t cudaGetDeviceCount(int* n) { return *n = mc_emu::device().count, cudaSuccess; }
cudaError_t cudaGetDevice(int* d) { return *d = mc_emu::state().device, cudaSuccess; }
cudaError_t cudaSetDevice(int d) {
  if (d < 0 || d >= mc_emu::device().count) return cudaErrorInvalidDevice;
  if (d != mc_emu::state().device) mc_emu::not_a_kernel();  // the previous kernel ran on another device
  return mc_emu::state().device = d, cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) {
  if (mc_emu::state().capture != nullptr) return cudaErrorStreamCaptureUnsupported;
  return mc_emu::not_a_kernel(), cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  const mc_emu::State& st = mc_emu::state();
  if (st.capture != nullptr && (s == st.capture_stream || s == nullptr)) return cudaErrorStreamCaptureUnsupported;
  return mc_emu::not_a_kernel(), cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device < 0 || device >= mc_emu::device().count) return cudaErrorInvalidDevice;
  std::memset(prop, 0, sizeof *prop);
  std::snprintf(prop->name, sizeof prop->name, "mc_emu (CUDA emulated on the CPU, %d SMs)", mc_emu::device().sms);
  prop->multiProcessorCount = mc_emu::device().sms;
  prop->major = 9;
  prop->minor = 0;
  prop->sharedMemPerBlockOptin = mc_emu::device().smem_optin;
  prop->l2CacheSize = mc_emu::device().l2_bytes;
  prop->totalGlobalMem = size_t(64) << 30;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device) {
  if (device < 0 || device >= mc_emu::device().count) return cudaErrorInvalidDevice;
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = mc_emu::device().sms; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = int(mc_emu::device().smem_optin); return cudaSuccess;
    case cudaDevAttrL2CacheSize: *value = mc_emu::device().l2_bytes; return cudaSuccess;
    default: return cudaErrorInvalidValue;
  }
}
cudaError_t cudaMalloc(void** p, size_t bytes) {
  *p = mc_emu::device_alloc(bytes == 0 ? 1 : bytes);
  return *p != nullptr ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void* p) { return p == nullptr || mc_emu::device_free(p) ? cudaSuccess : cudaErrorInvalidValue; }
cudaError_t cudaMallocHost(void** p, size_t bytes) {
  *p = std::malloc(bytes == 0 ? 1 : bytes);
  return *p != nullptr ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFreeHost(void* p) { return std::free(p), cudaSuccess; }
cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, enum cudaMemcpyKind) {
  if (mc_emu_capturing()) return cudaErrorStreamCaptureUnsupported;
  return std::memmove(dst, src, n), mc_emu::not_a_kernel(), cudaSuccess;
}
cudaError_t cudaMemcpy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height, enum cudaMemcpyKind) {
  if (mc_emu_capturing()) return cudaErrorStreamCaptureUnsupported;
  if (width > dpitch || width > spitch) return cudaErrorInvalidPitchValue;
  for (size_t r = 0; r < height; ++r) std::memmove(static_cast<char*>(dst) + r * dpitch, static_cast<const char*>(src) + r * spitch, width);
  return mc_emu::not_a_kernel(), cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, enum cudaMemcpyKind, cudaStream_t s) {
  return mc_emu_on_stream(s, [=]() { std::memmove(dst, src, n); });
}
cudaError_t cudaMemset(void* p, int v, size_t n) {
  if (mc_emu_capturing()) return cudaErrorStreamCaptureUnsupported;
  return std::memset(p, v, n), mc_emu::not_a_kernel(), cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t s) {
  return mc_emu_on_stream(s, [=]() { std::memset(p, v, n); });
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total) {
  *total = size_t(64) << 30;
  *free_bytes = size_t(60) << 30;
  return cudaSuccess;
}
cudaError_t cudaFuncGetAttributes(struct cudaFuncAttributes* attr, const void*) {
  std::memset(attr, 0, sizeof *attr);
  attr->binaryVersion = attr->ptxVersion = 90;
  attr->maxThreadsPerBlock = 1024;
  return cudaSuccess;
}
cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode) {
  mc_emu::State& st = mc_emu::state();
  if (st.capture != nullptr) return cudaErrorIllegalState;
  st.capture_stream = s;
  st.capture = new mc_emu_graph;
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* graph) {
  mc_emu::State& st = mc_emu::state();
  if (st.capture == nullptr || s != st.capture_stream) return cudaErrorIllegalState;
  *graph = reinterpret_cast<cudaGraph_t>(st.capture);
  st.capture = nullptr;
  st.capture_stream = nullptr;
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  *exec = reinterpret_cast<cudaGraphExec_t>(new mc_emu_graph(*reinterpret_cast<mc_emu_graph*>(graph)));
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
  if (mc_emu_capturing()) return cudaErrorStreamCaptureUnsupported;
  mc_emu::not_a_kernel();  // a graph's first kernel waits for what came before the graph in full
  for (const auto& step : *reinterpret_cast<mc_emu_graph*>(exec))
    if (const cudaError_t e = step()) return e;
  (void)s;
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) { return delete reinterpret_cast<mc_emu_graph*>(graph), cudaSuccess; }
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) { return delete reinterpret_cast<mc_emu_graph*>(exec), cudaSuccess; }
cudaError_t cudaMemcpyFromSymbol(void* dst, const void* symbol, size_t n, size_t offset, enum cudaMemcpyKind) {
  return std::memcpy(dst, static_cast<const char*>(symbol) + offset, n), cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* s) { return *s = reinterpret_cast<cudaStream_t>(new char), cudaSuccess; }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) { return cudaStreamCreate(s); }
cudaError_t cudaStreamDestroy(cudaStream_t s) { return delete reinterpret_cast<char*>(s), cudaSuccess; }
cudaError_t cudaEventCreate(cudaEvent_t* e) { return *e = reinterpret_cast<cudaEvent_t>(new double(0)), cudaSuccess; }
cudaError_t cudaEventDestroy(cudaEvent_t e) { return delete reinterpret_cast<double*>(e), cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  *reinterpret_cast<double*>(e) = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return mc_emu::not_a_kernel(), cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  return *ms = float(*reinterpret_cast<double*>(b) - *reinterpret_cast<double*>(a)), cudaSuccess;
}
cudaError_t cudaFuncSetAttribute(const void* func, enum cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeNonPortableClusterSizeAllowed) {
    if (value != 0 && value != 1) return cudaErrorInvalidValue;
    std::lock_guard<std::mutex> lock(mc_emu::global().mu);
    mc_emu::global().non_portable_cluster[func] = value == 1;
    return cudaSuccess;
  }
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;
  if (value < 0 || size_t(value) > mc_emu::device().smem_optin) return cudaErrorInvalidValue;
  std::lock_guard<std::mutex> lock(mc_emu::global().mu);
  mc_emu::global().max_dynamic_smem[func] = value;
  return cudaSuccess;
}
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, const void*, int block_size, size_t smem) {
  // An H100's limits: 2048 threads, 228 KB of shared memory (1 KB reserved per block), 32 blocks (registers are not emulated).
  return *blocks = mc_emu::resident_blocks(block_size, smem) / mc_emu::device().sms, cudaSuccess;
}
}  // extern "C"

// The C++ templates of cuda_runtime.h that the kernels use.
template <class T> cudaError_t cudaMalloc(T** p, size_t bytes) { return cudaMalloc(reinterpret_cast<void**>(p), bytes); }
template <class T> cudaError_t cudaMallocHost(T** p, size_t bytes) { return cudaMallocHost(reinterpret_cast<void**>(p), bytes); }
template <class T> cudaError_t cudaFuncSetAttribute(T* func, enum cudaFuncAttribute attr, int value) {
  return cudaFuncSetAttribute(reinterpret_cast<const void*>(func), attr, value);
}
template <class T> cudaError_t cudaFuncGetAttributes(struct cudaFuncAttributes* attr, T* func) {
  return cudaFuncGetAttributes(attr, reinterpret_cast<const void*>(func));
}
template <class T> cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, T func, int block_size, size_t smem) {
  return cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, reinterpret_cast<const void*>(func), block_size, smem);
}
template <class T>
cudaError_t cudaMemcpyFromSymbol(void* dst, const T& symbol, size_t n = sizeof(T), size_t offset = 0, enum cudaMemcpyKind kind = cudaMemcpyDeviceToHost) {
  return cudaMemcpyFromSymbol(dst, static_cast<const void*>(&symbol), n, offset, kind);
}
/** The cluster shape a launch configuration asks for (cudaLaunchAttributeClusterDimension), else 0 x 0 x 0 (none). */
inline dim3 mc_emu_cluster_shape(const cudaLaunchConfig_t* config) {
  dim3 cluster(0, 0, 0);
  for (unsigned i = 0; i < config->numAttrs; ++i)
    if (config->attrs[i].id == cudaLaunchAttributeClusterDimension)
      cluster = dim3(config->attrs[i].val.clusterDim.x, config->attrs[i].val.clusterDim.y, config->attrs[i].val.clusterDim.z);
  return cluster;
}
template <typename... P, typename... A>
cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t* config, void (*kernel)(P...), A&&... args) {
  bool pdl = false;          // cudaLaunchAttributeProgrammaticStreamSerialization: the PDL check (mc_emu.hpp)
  bool cooperative = false;  // cudaLaunchAttributeCooperative: every block resident at once, grid barriers allowed
  for (unsigned i = 0; i < config->numAttrs; ++i) {
    pdl = pdl || (config->attrs[i].id == cudaLaunchAttributeProgrammaticStreamSerialization && config->attrs[i].val.programmaticStreamSerializationAllowed != 0);
    cooperative = cooperative || (config->attrs[i].id == cudaLaunchAttributeCooperative && config->attrs[i].val.cooperative != 0);
  }
  return mc_emu::launch(kernel, "kernel (cudaLaunchKernelEx)", config->gridDim, config->blockDim, config->dynamicSmemBytes,
                        std::tuple<P...>(std::forward<A>(args)...), config->stream, pdl, cooperative, mc_emu_cluster_shape(config));
}
/**
 * Clusters of the configuration's shape that the emulated device holds at once: its resident blocks
 * (the occupancy rule) in whole clusters, 0 where the shape is not allowed (over 8 blocks without the
 * non-portable opt-in, over 16, or not dividing the grid).
 */
template <typename... P>
cudaError_t cudaOccupancyMaxActiveClusters(int* clusters, void (*kernel)(P...), const cudaLaunchConfig_t* config) {
  const dim3 c = mc_emu_cluster_shape(config);
  if (c.x == 0) return cudaErrorInvalidValue;  // the configuration names no cluster shape (and the kernel has none of its own)
  const int threads = int(config->blockDim.x * config->blockDim.y * config->blockDim.z);
  *clusters = mc_emu::cluster_shape_ok(reinterpret_cast<const void*>(kernel), config->gridDim, c) ? mc_emu::resident_blocks(threads, config->dynamicSmemBytes) / int(c.x * c.y * c.z) : 0;
  return cudaSuccess;
}
