#pragma once
#include <napi.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "model_call.hpp"
#include "model_handle.hpp"

/** What one forward call runs: checked and copied on the JS thread, before any thread is involved. */
struct ForwardArgs {
  std::vector<int32_t> tokens;  // copied: JS may reuse its Int32Array while we run
  int32_t startPos;
  bool allLogits;
  // The output, [n_tokens, vocab_local] or [vocab_local], NaN-filled: a Float32Array, or (native)
  // memory of our own that becomes one when the forward settles.
  Napi::Float32Array logits;
  std::unique_ptr<std::vector<float>> native;

  float* data() { return native ? native->data() : logits.Data(); }
};

/**
 * Checks forward(tokens: Int32Array, startPos, allLogits)'s arguments against `library` and
 * allocates the NaN-filled output of rows × rowLength floats (rows = tokens, or 1): a Float32Array,
 * or with `native` memory of our own (ForwardCall). Throws a Napi::Error naming the argument.
 */
ForwardArgs parseForwardArgs(const Napi::CallbackInfo& info, const Library& library, int64_t rowLength, bool native = false);

/**
 * Runs one forward on a libuv worker thread and settles the promise back on the JS thread: for a
 * runner that blocks (DistState: its ranks talk over sockets); ModelHandle and TpState run on
 * their own threads (ForwardCall).
 * Runner: forward(tokens, n, startPos, logits, allLogits) → "" or a message.
 * Owner (DistGroup): forwardFinished() clears its busy flag, on the JS thread.
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

  // Worker thread: touches only runner_, tokens_ and logitsData_. The runner turns what it catches
  // into its message (the library's own exceptions already come back as messages from ModelHandle),
  // and Napi::AsyncWorker's OnExecute turns any other std::exception into a rejection.
  void Execute() override {
    std::string error = runner_->forward(tokens_.data(), static_cast<int32_t>(tokens_.size()), startPos_, logitsData_, allLogits_);
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

/** Between a forward's model thread and its thread-safe function's finalizer (queueForwardOnThreads). */
struct SettleLine {
  std::mutex mutex;
  std::condition_variable changed;
  bool open = true;             // the thread-safe function exists (its finalizer has not run)
  bool finished = false;        // the model's thread is done with the call
  void* undelivered = nullptr;  // the call, where it could not be queued: the finalizer frees it
};

/**
 * One forward of a Runner that runs on its own threads (ModelHandle, TpState: forwardThen), settled
 * on the JS thread through a thread-safe function. Two thread wake-ups a call: the model's thread,
 * then the JS thread. A ForwardWorker takes four (a libuv worker, the model's thread, the worker
 * again, the JS thread): bench/RESULTS.md, "What the runtime adds to a decode step".
 * Made and settled on the JS thread; the model's threads only write `logits`, fill `error` and call.
 *
 * The output is memory of our own, handed to JS as an external ArrayBuffer when the call settles:
 * a worker thread that ends (worker.terminate()) frees its isolate's ArrayBuffers at once, while the
 * model may still be writing its logits.
 */
template <typename Owner, typename Runner>
struct ForwardCall {
  Owner* owner;
  Napi::ObjectReference ownerRef;   // keeps owner alive (and its busy flag valid) until we settle
  std::shared_ptr<Runner> runner;   // defers mc_destroy past this forward if close() comes now
  std::vector<int32_t> tokens;
  std::unique_ptr<std::vector<float>> logits;
  Napi::Promise::Deferred deferred;
  std::string error;

  /** Frees a call that will not settle (its environment is ending), on the JS thread, touching no JS. */
  static void discard(ForwardCall* call) {
    call->ownerRef.SuppressDestruct();
    delete call;
  }

  static void settle(Napi::Env env, Napi::Function, void*, ForwardCall* call) {
    if (env == nullptr) return discard(call);  // queued when the environment ended
    std::unique_ptr<ForwardCall> owned(call);
    owned->owner->forwardFinished();
    if (!owned->error.empty()) {
      owned->deferred.Reject(Napi::Error::New(env, owned->error).Value());
      return;
    }
    std::vector<float>* rows = owned->logits.get();
    Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(env, rows->data(), rows->size() * sizeof(float),
                                                      [](Napi::Env, void*, std::vector<float>* data) { delete data; }, rows);
    owned->logits.release();  // the ArrayBuffer's finalizer deletes it now
    owned->deferred.Resolve(Napi::Float32Array::New(env, rows->size(), buffer, 0));
  }
  using Settler = Napi::TypedThreadSafeFunction<void, ForwardCall, &ForwardCall::settle>;
};

/**
 * The JS forward(tokens, startPos, allLogits) of Owner (modelCallPromise: one at a time, every failure
 * a rejection): prepare(runner) checks what else it must and parses the arguments (parseForwardArgs,
 * its output native); the runner's forwardThen runs the forward on the model's threads
 * (ForwardCall), and busy is set until it settles.
 */
template <typename Owner, typename Runner, typename Prepare>
Napi::Value queueForwardOnThreads(const Napi::CallbackInfo& info, Owner* owner, std::shared_ptr<Runner> runner, bool& busy,
                                  Prepare prepare) {
  using Call = ForwardCall<Owner, Runner>;
  Napi::Env env = info.Env();
  return modelCallPromise(env, !runner, busy, [&](Napi::Promise::Deferred deferred) {
    ForwardArgs args = prepare(*runner);
    float* logits = args.data();
    auto call = std::unique_ptr<Call>(new Call{owner, Napi::Persistent(owner->Value()), runner, std::move(args.tokens),
                                               std::move(args.native), deferred, {}});
    // One thread-safe function per call, released by the model's thread once it has queued the
    // settlement: while it exists the event loop stays alive, as it does for a queued AsyncWorker.
    // Node deletes it when its environment ends (a worker thread terminated) even while a thread
    // still holds it; its finalizer, on the JS thread, then closes the line and waits for the
    // forward to end: nothing calls it afterwards, and the model is let go before Node unloads
    // this addon (a worker's addons go with it).
    auto line = std::make_shared<SettleLine>();
    typename Call::Settler settler = Call::Settler::New(
        env, "mistral-compile:forward", 0, 1, static_cast<void*>(nullptr),
        [](Napi::Env, std::shared_ptr<SettleLine>* held, void*) {
          std::unique_ptr<std::shared_ptr<SettleLine>> owned(held);
          SettleLine& l = **owned;
          std::unique_lock<std::mutex> lock(l.mutex);
          l.open = false;
          l.changed.wait(lock, [&] { return l.finished; });
          if (l.undelivered != nullptr) Call::discard(static_cast<Call*>(l.undelivered));
        },
        new std::shared_ptr<SettleLine>(line));
    Call* raw = call.release();
    busy = true;
    runner->forwardThen(raw->tokens.data(), static_cast<int32_t>(raw->tokens.size()), args.startPos, logits, args.allLogits,
                        [raw, settler, line](std::string error) mutable {
                          raw->error = std::move(error);
                          std::lock_guard<std::mutex> lock(line->mutex);
                          // Closed or closing: the environment is ending; the finalizer frees the call.
                          if (!line->open || settler.NonBlockingCall(raw) != napi_ok) line->undelivered = raw;
                          if (line->open) settler.Release();
                          line->finished = true;
                          line->changed.notify_all();
                        });
  });
}

/** queueForwardOnThreads for a runner that blocks, through a ForwardWorker (its output a Float32Array). */
template <typename Owner, typename Runner, typename Prepare>
Napi::Value queueForward(const Napi::CallbackInfo& info, Owner* owner, std::shared_ptr<Runner> runner, bool& busy,
                         Prepare prepare) {
  return modelCallPromise(info.Env(), !runner, busy, [&](Napi::Promise::Deferred deferred) {
    ForwardArgs args = prepare(*runner);
    auto* worker = new ForwardWorker<Owner, Runner>(info.Env(), owner, owner->Value(), std::move(runner), std::move(args), deferred);
    worker->Queue();
    busy = true;
  });
}
