// NCCL, loaded at run time: builds need no NCCL headers or library (CI has neither), and a machine
// without NCCL runs TP 1 and is told what is missing only when TP > 1 asks for it. Copied verbatim
// next to the generated CUDA sources, like mc_cuda.cuh.
#pragma once
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <cstddef>
#include <cstdio>

namespace mc::nccl {

// The few declarations of nccl.h this code uses (NCCL 2.x, stable ABI): the values are NCCL's own.
constexpr int kUniqueIdBytes = 128;  // NCCL_UNIQUE_ID_BYTES
struct UniqueId { char internal[kUniqueIdBytes]; };
using Comm = struct ncclComm*;
using Result = int;        // ncclSuccess = 0
constexpr int kFloat32 = 7;  // ncclFloat32
constexpr int kSum = 0;      // ncclSum

struct Api {
  Result (*getUniqueId)(UniqueId*);
  Result (*commInitRank)(Comm*, int nranks, UniqueId id, int rank);
  Result (*allReduce)(const void* send, void* recv, size_t count, int dtype, int op, Comm, cudaStream_t);
  Result (*commDestroy)(Comm);
  const char* (*getErrorString)(Result);
};

/** NCCL's entry points, or nullptr with a one-line reason in `err`. Loaded once per process. */
inline const Api* load(char* err, size_t errlen) {
  static Api api{};
  static bool loaded = false;
  static char reason[256] = "";
  if (!loaded) {
    loaded = true;
    // RTLD_NODELETE: NCCL keeps threads that must not outlive its code.
    void* h = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (h == nullptr) {
      std::snprintf(reason, sizeof reason, "NCCL not found (dlopen libnccl.so.2: %s); install NCCL 2 or put it on LD_LIBRARY_PATH, or run with --tp 1", dlerror());
    } else {
      api.getUniqueId = reinterpret_cast<decltype(api.getUniqueId)>(dlsym(h, "ncclGetUniqueId"));
      api.commInitRank = reinterpret_cast<decltype(api.commInitRank)>(dlsym(h, "ncclCommInitRank"));
      api.allReduce = reinterpret_cast<decltype(api.allReduce)>(dlsym(h, "ncclAllReduce"));
      api.commDestroy = reinterpret_cast<decltype(api.commDestroy)>(dlsym(h, "ncclCommDestroy"));
      api.getErrorString = reinterpret_cast<decltype(api.getErrorString)>(dlsym(h, "ncclGetErrorString"));
      if (!api.getUniqueId || !api.commInitRank || !api.allReduce || !api.commDestroy || !api.getErrorString)
        std::snprintf(reason, sizeof reason, "libnccl.so.2 lacks an NCCL 2 entry point; install NCCL 2.x");
    }
  }
  if (reason[0] != '\0') {
    if (err != nullptr && errlen > 0) std::snprintf(err, errlen, "%s", reason);
    return nullptr;
  }
  return &api;
}

}  // namespace mc::nccl
