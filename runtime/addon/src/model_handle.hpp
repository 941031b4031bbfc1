#pragma once
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "compiled_library.hpp"
#include "mapped_file.hpp"
#include "mc_abi.h"
#include "serial_thread.hpp"

/**
 * One mc_model and everything it points into: the library's code, the mapped checkpoint (its one
 * file, or each of its shards) and the mc_weight array. Shared by the JS ModelInstance and a forward in flight, so mc_destroy runs
 * exactly once, when the last of them lets go — never under a running forward. Every call into the
 * library runs on the model's own SerialThread (see serial_thread.hpp for why).
 */
class ModelHandle {
 public:
  /** Calls mc_create (device: a GPU library's ordinal); throws std::runtime_error with the library's message on failure. */
  ModelHandle(std::shared_ptr<const Library> library, std::vector<std::shared_ptr<const Mapping>> mappings,
              std::vector<mc_weight> weights, int32_t rank, int32_t device);
  ~ModelHandle();
  ModelHandle(const ModelHandle&) = delete;
  ModelHandle& operator=(const ModelHandle&) = delete;

  const Library& library() const { return *library_; }

  /**
   * Attaches a communicator for tensor parallelism, on the model's thread; the future throws if the
   * library cannot take one. Asynchronous because a GPU library's NCCL set-up waits for every rank.
   */
  std::future<void> setComm(const mc_comm& comm);

  /**
   * Queues mc_forward on the model's thread; the future gives "" on success, else the library's
   * message. The pointers must stay valid until it is ready. Safe off the JS thread.
   */
  std::future<std::string> forwardAsync(const int32_t* tokens, int32_t nTokens, int32_t startPos, float* logits,
                                        bool allLogits);

  /**
   * Queues mc_kv_save (save: the model's cache into data) or mc_kv_load (data into it) of a snapshot
   * of nPositions, `bytes` long, on the model's thread; the future gives "" or the library's message.
   * The library must have them (Library::kvBytes). `data` must stay valid until it is ready.
   */
  std::future<std::string> copyKvAsync(bool save, int32_t nPositions, void* data, int64_t bytes);

  /**
   * forwardAsync with a completion callback instead of a future: `done` gets "" or the message, on
   * the model's thread, once mc_forward has returned; it must not let go of the last reference to
   * this handle (~SerialThread cannot join itself). No thread waits in between: a forward from JS
   * wakes this thread, and `done` wakes the JS thread (forward_worker.hpp).
   */
  void forwardThen(const int32_t* tokens, int32_t nTokens, int32_t startPos, float* logits, bool allLogits,
                   std::function<void(std::string)> done);

  /** forwardAsync, waited for. */
  std::string forward(const int32_t* tokens, int32_t nTokens, int32_t startPos, float* logits, bool allLogits) {
    return forwardAsync(tokens, nTokens, startPos, logits, allLogits).get();
  }

 private:
  std::shared_ptr<const Library> library_;
  std::vector<std::shared_ptr<const Mapping>> mappings_;
  std::vector<mc_weight> weights_;
  mc_model* model_ = nullptr;
  SerialThread thread_;

  std::string forwardHere(const int32_t* tokens, int32_t nTokens, int32_t startPos, float* logits, bool allLogits);
  /** The first mapped file's changedSinceMapped() line, or "" when none changed. */
  std::string changedSinceMapped() const;
};
