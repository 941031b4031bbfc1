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
//
// One header per part, included here in dependency order:
//   mc_cuda_base.cuh   element types, reductions, row loaders, RoPE
//   mc_device.cuh      the GPU's facts and switches (DeviceInfo), the PDL launch
//   mc_gemv.cuh        gemv_kernel, L2Next
//   mc_gemm.cuh        gemm_kernel, gemm(), RowNorm, split-K, A narrowed once (+ mc_gemm_wgmma.cuh)
//   mc_attention.cuh   decode and prefill attention
#pragma once
#include "mc_cuda_base.cuh"
#include "mc_device.cuh"
#include "mc_gemv.cuh"
#include "mc_gemm.cuh"
#include "mc_attention.cuh"
