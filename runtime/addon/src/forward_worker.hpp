#pragma once
#include <napi.h>

#include <memory>
#include <string>
#include <vector>

#include "model_handle.hpp"

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

/**
 * Runs one forward on a libuv worker thread and settles the promise back on the JS thread.
 * Runner (ModelHandle, TpState): forward(tokens, n, startPos, logits, allLogits) → "" or a message.
 * Owner (ModelInstance, TpGroup): forwardFinished() clears its busy flag, on the JS thread.
 */
template <typename Owner, typename Runner>
class ForwardWorker : public Napi::AsyncWorker {
 public:
  ForwardWorker(Napi::Env env, Owner* owner, Napi::Object ownerObject, std::shared_ptr<Runner> runner, ForwardArgs args,
                Napi::Promise::Deferred deferred)
      : Napi::AsyncWorker(env, "mistral-compile:forward"),
        owner_(owner),
        ownerRef_(Napi::Persistent(ownerObject)),
        runner_(std::move(runner)),
        tokens_(std::move(args.tokens)),
        startPos_(args.startPos),
        allLogits_(args.allLogits),
        logitsRef_(Napi::Persistent(static_cast<Napi::Object>(args.logits))),
        logitsData_(args.logits.Data()),
        deferred_(deferred) {}

  // Worker thread: touches only runner_, tokens_ and logitsData_.
  void Execute() override {
    std::string error;
    try {
      error = runner_->forward(tokens_.data(), static_cast<int32_t>(tokens_.size()), startPos_, logitsData_, allLogits_);
    } catch (const std::exception& e) {  // a C++ library that lets an exception cross the C ABI
      error = std::string("mc_forward threw: ") + e.what();
    } catch (...) {
      error = "mc_forward threw a non-standard exception";
    }
    if (!error.empty()) SetError(error);
  }
  void OnOK() override {
    owner_->forwardFinished();
    deferred_.Resolve(logitsRef_.Value());
  }
  void OnError(const Napi::Error& error) override {
    owner_->forwardFinished();
    deferred_.Reject(error.Value());
  }

 private:
  Owner* owner_;
  Napi::ObjectReference ownerRef_;   // keeps owner_ alive (and its busy flag valid) until we settle
  std::shared_ptr<Runner> runner_;   // defers mc_destroy past this forward if close() comes now
  std::vector<int32_t> tokens_;
  int32_t startPos_;
  bool allLogits_;
  Napi::ObjectReference logitsRef_;  // keeps the output's ArrayBuffer alive while Execute writes it
  float* logitsData_;
  Napi::Promise::Deferred deferred_;
};

/**
 * The JS forward(tokens, startPos, allLogits) of Owner, shaped like an async function: every failure,
 * even a bad argument, is a rejection, never a throw. Refuses a closed owner (null runner) and a busy
 * one (one forward at a time), then prepare(runner) checks what else it must and parses the
 * arguments (parseForwardArgs); the forward runs in a ForwardWorker, and busy is set until it settles.
 */
template <typename Owner, typename Runner, typename Prepare>
Napi::Value queueForward(const Napi::CallbackInfo& info, Owner* owner, std::shared_ptr<Runner> runner, bool& busy,
                         Prepare prepare) {
  Napi::Env env = info.Env();
  Napi::Promise::Deferred deferred = Napi::Promise::Deferred::New(env);
  try {
    if (!runner) throw Napi::Error::New(env, "model is closed");
    if (busy) throw Napi::Error::New(env, "model is busy: await the previous call");
    ForwardArgs args = prepare(*runner);
    auto* worker = new ForwardWorker<Owner, Runner>(env, owner, owner->Value(), std::move(runner), std::move(args), deferred);
    worker->Queue();
    busy = true;
  } catch (const Napi::Error& e) {
    deferred.Reject(e.Value());
  }
  return deferred.Promise();
}
