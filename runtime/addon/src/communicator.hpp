#pragma once
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <vector>

#include "mc_abi.h"

/**
 * In-process collectives for the ranks of one model, each running mc_forward on its own thread.
 * all_reduce_sum: every rank publishes its buffer, each rank sums a disjoint slice across all
 * buffers and writes the sum back into every buffer, then all leave together.
 */
class Communicator {
 public:
  Communicator(int32_t world, int32_t threadsPerRank);
  mc_comm comm();

 private:
  static void allReduceSum(void* ctx, int32_t rank, float* data, int64_t n);
  void barrier();

  int32_t world_;
  int32_t threads_;
  std::vector<float*> buffers_;
  std::mutex mutex_;
  std::condition_variable cv_;
  int32_t arrived_ = 0;
  uint64_t generation_ = 0;
};
