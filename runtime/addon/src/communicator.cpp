#include "communicator.hpp"

#include <algorithm>

Communicator::Communicator(int32_t world, int32_t threadsPerRank)
    : world_(world), threads_(threadsPerRank), buffers_(static_cast<size_t>(world), nullptr) {}

mc_comm Communicator::comm() {
  mc_comm c{};  // nccl_id zeroed: filled by a GPU library's mc_nccl_unique_id when there is one
  c.ctx = this;
  c.world = world_;
  c.threads = threads_;
  c.all_reduce_sum = &Communicator::allReduceSum;
  return c;
}

void Communicator::barrier() {
  std::unique_lock<std::mutex> lock(mutex_);
  const uint64_t generation = generation_;
  if (++arrived_ == world_) {
    arrived_ = 0;
    ++generation_;
    cv_.notify_all();
  } else {
    cv_.wait(lock, [&] { return generation_ != generation; });
  }
}

void Communicator::allReduceSum(void* ctx, int32_t rank, float* data, int64_t n) {
  auto* self = static_cast<Communicator*>(ctx);
  self->buffers_[static_cast<size_t>(rank)] = data;
  self->barrier();  // every buffer published
  const int64_t per = (n + self->world_ - 1) / self->world_;
  const int64_t begin = std::min<int64_t>(n, per * rank), end = std::min<int64_t>(n, begin + per);
  for (int64_t i = begin; i < end; ++i) {
    float sum = 0.f;  // ranks added in rank order: the same sum on every rank, run after run
    for (float* b : self->buffers_) sum += b[i];
    for (float* b : self->buffers_) b[i] = sum;
  }
  self->barrier();  // every slice written before any rank touches its buffer again
}
