#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "compiled_library.hpp"
#include "mapped_file.hpp"
#include "mc_abi.h"

/**
 * One mc_model and everything it points into: the library's code, the mapped checkpoint and the
 * mc_weight array. Shared by the JS ModelInstance and a forward in flight, so mc_destroy runs
 * exactly once, when the last of them lets go — never under a running forward.
 */
class ModelHandle {
 public:
  /** Calls mc_create; throws std::runtime_error with the library's message on failure. */
  ModelHandle(std::shared_ptr<const Library> library, std::shared_ptr<const Mapping> mapping,
              std::vector<mc_weight> weights, int32_t rank);
  ~ModelHandle();
  ModelHandle(const ModelHandle&) = delete;
  ModelHandle& operator=(const ModelHandle&) = delete;

  const Library& library() const { return *library_; }

  /** Attaches a communicator for tensor parallelism; throws if the library cannot take one. */
  void setComm(const mc_comm& comm);

  /** Runs mc_forward; returns "" on success, else the library's message. Safe off the JS thread. */
  std::string forward(const int32_t* tokens, int32_t nTokens, int32_t startPos, float* logits, bool allLogits);

 private:
  std::shared_ptr<const Library> library_;
  std::shared_ptr<const Mapping> mapping_;
  std::vector<mc_weight> weights_;
  mc_model* model_ = nullptr;
};
