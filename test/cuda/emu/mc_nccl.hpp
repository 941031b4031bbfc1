// The emulator's templates/include/mc_nccl.hpp: the same declarations and load(), with NCCL's five
// calls carried out in this process. Tensor-parallel ranks of one emulated library are threads of
// one process (the runtime's TpGroup runs each rank's forward on its own thread, and joins them all
// at once), so a communicator is a rendezvous of threads: ncclCommInitRank waits for every rank, and
// an all-reduce is two barriers around each rank reading every rank's buffer. An all-reduce on a
// capturing stream is recorded and runs when the graph replays, as NCCL's does.
#pragma once
#include <cuda_runtime.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace mc::nccl {

constexpr int kUniqueIdBytes = 128;
struct UniqueId { char internal[kUniqueIdBytes]; };
using Comm = struct ncclComm*;
using Result = int;
constexpr int kFloat32 = 7;
constexpr int kSum = 0;

struct Api {
  Result (*getUniqueId)(UniqueId*);
  Result (*commInitRank)(Comm*, int nranks, UniqueId id, int rank);
  Result (*allReduce)(const void* send, void* recv, size_t count, int dtype, int op, Comm, cudaStream_t);
  Result (*commDestroy)(Comm);
  const char* (*getErrorString)(Result);
};

}  // namespace mc::nccl

namespace mc_emu::nccl {

/** The ranks of one communicator: a generation-counting barrier and every rank's buffer of the current collective. */
struct Group {
  int nranks = 0;
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0, joined = 0;
  uint64_t generation = 0;
  std::vector<const float*> send;
  std::vector<size_t> count;

  /** Blocks until every rank has called it the same number of times. */
  void barrier() {
    std::unique_lock<std::mutex> lock(mu);
    const uint64_t g = generation;
    if (++arrived == nranks) {
      arrived = 0;
      ++generation;
      cv.notify_all();
    } else {
      cv.wait(lock, [&] { return generation != g; });
    }
  }
};

inline std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}
inline std::map<std::string, std::shared_ptr<Group>>& registry() {
  static std::map<std::string, std::shared_ptr<Group>> groups;
  return groups;
}

}  // namespace mc_emu::nccl

// The type that mc::nccl::Comm points at (declared by the `using` above, in namespace mc::nccl).
namespace mc::nccl {
struct ncclComm {
  std::shared_ptr<mc_emu::nccl::Group> group;
  int rank;
};
}  // namespace mc::nccl

namespace mc_emu::nccl {

inline mc::nccl::Result get_unique_id(mc::nccl::UniqueId* id) {
  static std::atomic<uint64_t> next{1};
  std::memset(id->internal, 0, sizeof id->internal);
  std::snprintf(id->internal, sizeof id->internal, "mc_emu nccl %llu", static_cast<unsigned long long>(next++));
  return 0;
}

inline mc::nccl::Result comm_init_rank(mc::nccl::Comm* comm, int nranks, mc::nccl::UniqueId id, int rank) {
  if (nranks < 1 || rank < 0 || rank >= nranks) return 4;  // ncclInvalidArgument
  std::shared_ptr<Group> group;
  {
    std::lock_guard<std::mutex> lock(registry_mutex());
    std::shared_ptr<Group>& g = registry()[std::string(id.internal, sizeof id.internal)];
    if (!g) {
      g = std::make_shared<Group>();
      g->nranks = nranks;
      g->send.assign(size_t(nranks), nullptr);
      g->count.assign(size_t(nranks), 0);
    }
    if (g->nranks != nranks) return 4;
    group = g;
  }
  *comm = new mc::nccl::ncclComm{group, rank};
  group->barrier();  // as ncclCommInitRank: returns once every rank has joined
  return 0;
}

/** Sums rank by rank into this rank's own copy, between a barrier that publishes every buffer and one that says all have read them. */
inline mc::nccl::Result all_reduce_now(const float* send, float* recv, size_t count, mc::nccl::Comm comm) {
  Group& g = *comm->group;
  g.send[size_t(comm->rank)] = send;
  g.count[size_t(comm->rank)] = count;
  g.barrier();
  for (int r = 0; r < g.nranks; ++r)
    if (g.count[size_t(r)] != count) mc_emu::fail("ncclAllReduce: ranks passed different counts");
  std::vector<float> sum(count, 0.f);
  for (int r = 0; r < g.nranks; ++r)
    for (size_t i = 0; i < count; ++i) sum[i] += g.send[size_t(r)][i];
  g.barrier();
  std::memcpy(recv, sum.data(), count * sizeof(float));
  not_a_kernel();  // a PDL launch after an all-reduce waits for it in full
  return 0;
}

inline mc::nccl::Result all_reduce(const void* send, void* recv, size_t count, int dtype, int op, mc::nccl::Comm comm, cudaStream_t stream) {
  if (dtype != mc::nccl::kFloat32 || op != mc::nccl::kSum || comm == nullptr) return 4;
  const float* s = static_cast<const float*>(send);
  float* r = static_cast<float*>(recv);
  State& st = state();
  if (st.capture != nullptr && stream == st.capture_stream) {
    st.capture->push_back([=]() { return all_reduce_now(s, r, count, comm) == 0 ? cudaSuccess : cudaErrorUnknown; });
    return 0;
  }
  return all_reduce_now(s, r, count, comm);
}

inline mc::nccl::Result comm_destroy(mc::nccl::Comm comm) {
  delete comm;
  return 0;
}
inline const char* error_string(mc::nccl::Result r) { return r == 0 ? "no error" : r == 4 ? "invalid argument (emulated NCCL)" : "unhandled error (emulated NCCL)"; }

}  // namespace mc_emu::nccl

namespace mc::nccl {
/** The emulated NCCL: always there. */
inline const Api* load(char*, size_t) {
  static const Api api{mc_emu::nccl::get_unique_id, mc_emu::nccl::comm_init_rank, mc_emu::nccl::all_reduce, mc_emu::nccl::comm_destroy,
                       mc_emu::nccl::error_string};
  return &api;
}
}  // namespace mc::nccl
