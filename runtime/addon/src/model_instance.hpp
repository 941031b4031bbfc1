#pragma once
#include <napi.h>

#include <memory>

#include "forward_worker.hpp"
#include "model_handle.hpp"

/**
 * JS class ModelInstance(library, mappedFile, weights, rank, device = rank): one model's state (KV
 * cache) on one TP rank (on GPU `device` for a GPU library). .forward(tokens, startPos, allLogits) → Promise<Float32Array>, .forwardSync(...),
 * .close(), .closed. One forward at a time: the KV cache is this instance's only state.
 */
class ModelInstance : public Napi::ObjectWrap<ModelInstance> {
 public:
  static Napi::Function define(Napi::Env env);
  explicit ModelInstance(const Napi::CallbackInfo& info);

  /** Hands the model to a TpGroup: this instance is closed from then on (null if already closed or busy). */
  std::shared_ptr<ModelHandle> takeHandle() { return busy_ ? nullptr : std::move(handle_); }

  /** Called on the JS thread when its forward has finished, either way (ForwardCall::settle). */
  void forwardFinished() { busy_ = false; }

 private:
  Napi::Value forward(const Napi::CallbackInfo& info);
  Napi::Value forwardSync(const Napi::CallbackInfo& info);
  void close(const Napi::CallbackInfo& info);
  Napi::Value closed(const Napi::CallbackInfo& info);

  /** Checks state and arguments (throws a Napi::Error) and allocates the output. */
  ForwardArgs prepareForward(const Napi::CallbackInfo& info, bool native = false);

  std::shared_ptr<ModelHandle> handle_;  // null once closed
  bool busy_ = false;
};
