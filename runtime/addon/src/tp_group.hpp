#pragma once
#include <napi.h>

#include <memory>
#include <vector>

#include "communicator.hpp"
#include "model_handle.hpp"

/** The ranks of one tensor-parallel model: run together, logits gathered over the vocabulary. */
struct TpState {
  std::vector<std::shared_ptr<ModelHandle>> ranks;
  std::vector<int32_t> vocabStart;
  int32_t vocabLocal;
  int32_t vocabSize;
  std::unique_ptr<Communicator> communicator;

  /** Runs every rank on its own thread, then gathers [rows, vocab_local] slices into [rows, vocab]. */
  std::string forward(const int32_t* tokens, int32_t n, int32_t startPos, float* out, bool allLogits);
};

/**
 * JS class TpGroup(instances: ModelInstance[], vocabSize, threadsPerRank): takes over the instances
 * (rank i = instances[i]). .forward(tokens, startPos, allLogits) → Promise<Float32Array> of full
 * logits, .close(), .closed. One forward at a time.
 */
class TpGroup : public Napi::ObjectWrap<TpGroup> {
 public:
  static Napi::Function define(Napi::Env env);
  explicit TpGroup(const Napi::CallbackInfo& info);

  /** Called by its ForwardWorker on the JS thread when a forward has finished, either way. */
  void forwardFinished() { busy_ = false; }

 private:
  Napi::Value forward(const Napi::CallbackInfo& info);
  void close(const Napi::CallbackInfo& info);
  Napi::Value closed(const Napi::CallbackInfo& info);

  std::shared_ptr<TpState> state_;  // null once closed
  bool busy_ = false;
};
