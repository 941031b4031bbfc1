#include "kv_snapshot.hpp"

#include <future>

#include "model_call.hpp"

int64_t kvSnapshotBytes(const std::vector<std::shared_ptr<ModelHandle>>& ranks, int32_t nPositions) {
  if (ranks.empty() || ranks[0]->library().kvBytes == nullptr) return -1;
  const int64_t perRank = ranks[0]->library().kvBytes(nPositions);  // every rank runs the same library
  return perRank < 0 ? -1 : perRank * static_cast<int64_t>(ranks.size());
}

std::string copyKvSnapshot(const std::vector<std::shared_ptr<ModelHandle>>& ranks, bool save, int32_t nPositions, uint8_t* data) {
  const int64_t total = kvSnapshotBytes(ranks, nPositions);
  if (total < 0) return "this library cannot snapshot " + std::to_string(nPositions) + " positions";
  const int64_t perRank = total / static_cast<int64_t>(ranks.size());
  std::vector<std::future<std::string>> running;
  for (size_t r = 0; r < ranks.size(); ++r) running.push_back(ranks[r]->copyKvAsync(save, nPositions, data + static_cast<int64_t>(r) * perRank, perRank));
  // Every rank is waited for before anything returns: they copy into or out of data until then.
  std::string first;
  for (auto& f : running) {
    // A rank's task that threw (out of memory for its message, or a task its thread never ran:
    // std::future_error) still lets the others finish with `data`. The library's own exceptions
    // are messages already (ModelHandle::copyKvAsync).
    std::string error = guardedCall("copying the KV cache", [&] { return f.get(); });
    if (first.empty()) first = error;
  }
  return first;
}
