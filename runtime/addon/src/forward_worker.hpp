#pragma once
#include <napi.h>

#include <memory>
#include <string>
#include <vector>

#include "model_handle.hpp"

class ModelInstance;

/** What one forward call runs: checked and copied on the JS thread, before any thread is involved. */
struct ForwardArgs {
  std::vector<int32_t> tokens;  // copied: JS may reuse its Int32Array while we run
  int32_t startPos;
  bool allLogits;
  Napi::Float32Array logits;  // [n_tokens, vocab_local] or [vocab_local], NaN-filled
};

/**
 * Checks forward(tokens: Int32Array, startPos, allLogits)'s arguments against `library` and
 * allocates the NaN-filled output of rows × rowLength floats (rows = tokens, or 1). Throws a
 * Napi::Error naming the argument.
 */
ForwardArgs parseForwardArgs(const Napi::CallbackInfo& info, const Library& library, int64_t rowLength);

/** Runs one mc_forward on a libuv worker thread and settles the promise back on the JS thread. */
class ForwardWorker : public Napi::AsyncWorker {
 public:
  ForwardWorker(Napi::Env env, ModelInstance* owner, Napi::Object ownerObject, std::shared_ptr<ModelHandle> handle,
                ForwardArgs args, Napi::Promise::Deferred deferred);

  void Execute() override;  // worker thread: touches only handle_, tokens_ and logitsData_
  void OnOK() override;
  void OnError(const Napi::Error& error) override;

 private:
  ModelInstance* owner_;
  Napi::ObjectReference ownerRef_;  // keeps owner_ alive (and its busy flag valid) until we settle
  std::shared_ptr<ModelHandle> handle_;  // defers mc_destroy past this forward if close() comes now
  std::vector<int32_t> tokens_;
  int32_t startPos_;
  bool allLogits_;
  Napi::ObjectReference logitsRef_;  // keeps the output's ArrayBuffer alive while Execute writes it
  float* logitsData_;
  Napi::Promise::Deferred deferred_;
};
