#pragma once
#include <napi.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "model_call.hpp"
#include "js_args.hpp"
#include "model_handle.hpp"

/**
 * KV-cache snapshots of a model's ranks (mc_kv_* of runtime/abi/mc_abi.h): one buffer holds every
 * rank's part, rank after rank. runtime/model.ts keeps a generation's snapshot while another call
 * uses the model and puts it back before the generation's next step.
 */

/** Bytes of a snapshot of nPositions of `ranks`, or -1: a library without mc_kv_*, or positions past its reach. */
int64_t kvSnapshotBytes(const std::vector<std::shared_ptr<ModelHandle>>& ranks, int32_t nPositions);

/** Every rank's part at once, each on its model's thread: "" or the first failing rank's message. */
std::string copyKvSnapshot(const std::vector<std::shared_ptr<ModelHandle>>& ranks, bool save, int32_t nPositions, uint8_t* data);

/**
 * Runs one save or load on a libuv worker and settles the promise on the JS thread: a save resolves
 * to the ArrayBuffer it filled, a load to undefined. Runner (TpState, DistState):
 * copyKv(save, nPositions, data) → "" or a message. Owner: forwardFinished() clears its busy flag.
 */
template <typename Owner, typename Runner>
class KvWorker : public Napi::AsyncWorker {
 public:
  KvWorker(Napi::Env env, Owner* owner, Napi::Object ownerObject, std::shared_ptr<Runner> runner, bool save, int32_t nPositions,
           Napi::ArrayBuffer buffer, Napi::Promise::Deferred deferred)
      : Napi::AsyncWorker(env, "mistral-compile:kv-snapshot"),
        owner_(owner),
        ownerRef_(Napi::Persistent(ownerObject)),
        runner_(std::move(runner)),
        save_(save),
        nPositions_(nPositions),
        bufferRef_(Napi::Persistent(static_cast<Napi::Object>(buffer))),
        data_(static_cast<uint8_t*>(buffer.Data())),
        deferred_(deferred) {}

  // copyKvSnapshot catches what its ranks' copies throw (ModelHandle the library's mc_kv_save and
  // mc_kv_load exceptions); its mc_kv_bytes gave this size on the JS thread before (queueKv), and
  // Napi::AsyncWorker's OnExecute turns any other std::exception into a rejection.
  void Execute() override {
    std::string error = runner_->copyKv(save_, nPositions_, data_);
    if (!error.empty()) SetError(error);
  }
  void OnOK() override {
    owner_->forwardFinished();
    if (save_) deferred_.Resolve(bufferRef_.Value());
    else deferred_.Resolve(Env().Undefined());
  }
  void OnError(const Napi::Error& error) override {
    owner_->forwardFinished();
    deferred_.Reject(error.Value());
  }

 private:
  Owner* owner_;
  Napi::ObjectReference ownerRef_;
  std::shared_ptr<Runner> runner_;  // defers mc_destroy past this copy if close() comes now
  bool save_;
  int32_t nPositions_;
  Napi::ObjectReference bufferRef_;  // keeps the snapshot's memory alive while Execute copies
  uint8_t* data_;
  Napi::Promise::Deferred deferred_;
};

/**
 * The JS saveKv(nPositions) → Promise<ArrayBuffer> (save) or loadKv(buffer, nPositions) → Promise<void>
 * of Owner: rejections, never throws, for a closed or busy owner, a library without snapshots, or
 * a buffer of the wrong size; busy is set until it settles (one call at a time, as forward).
 */
template <typename Owner, typename Runner>
Napi::Value queueKv(const Napi::CallbackInfo& info, Owner* owner, std::shared_ptr<Runner> runner, bool& busy, bool save) {
  Napi::Env env = info.Env();
  return modelCallPromise(env, !runner, busy, [&](Napi::Promise::Deferred deferred) {
    const std::string what = save ? "saveKv" : "loadKv";
    const Napi::Value positionsArg = save ? info[0] : info[1];
    const int32_t nPositions = static_cast<int32_t>(toInt64(positionsArg, what + ": nPositions", 0, INT32_MAX));
    const int64_t bytes = runner->kvBytes(nPositions);
    if (bytes < 0) throw Napi::Error::New(env, what + ": this library cannot snapshot " + std::to_string(nPositions) + " positions");
    Napi::ArrayBuffer buffer;
    if (save) {
      // Our own allocation, not V8's: a snapshot too large for the memory left is a rejection (the
      // generation then replays its sequence), where V8 ends the process; and it is not zero-filled.
      void* data = std::malloc(static_cast<size_t>(std::max<int64_t>(bytes, 1)));
      if (data == nullptr) throw Napi::Error::New(env, "saveKv: out of memory for a snapshot of " + std::to_string(bytes) + " bytes");
      buffer = Napi::ArrayBuffer::New(env, data, static_cast<size_t>(bytes), [](Napi::Env, void* p) { std::free(p); });
    } else {
      if (!info[0].IsArrayBuffer()) throw Napi::TypeError::New(env, "loadKv: snapshot must be an ArrayBuffer");
      buffer = info[0].As<Napi::ArrayBuffer>();
      if (static_cast<int64_t>(buffer.ByteLength()) != bytes)
        throw Napi::RangeError::New(env, "loadKv: a snapshot of " + std::to_string(nPositions) + " positions takes " + std::to_string(bytes) +
                                             " bytes, got " + std::to_string(buffer.ByteLength()));
    }
    auto* worker = new KvWorker<Owner, Runner>(env, owner, owner->Value(), std::move(runner), save, nPositions, buffer, deferred);
    worker->Queue();
    busy = true;
  });
}

/** The JS kvBytes(nPositions) of Owner: a snapshot's size, or -1 where there are none (closed, no mc_kv_*, too many positions). */
template <typename Runner>
Napi::Value kvBytesValue(const Napi::CallbackInfo& info, const std::shared_ptr<Runner>& runner) {
  const int32_t nPositions = static_cast<int32_t>(toInt64(info[0], "kvBytes: nPositions", 0, INT32_MAX));
  return Napi::Number::New(info.Env(), runner ? static_cast<double>(runner->kvBytes(nPositions)) : -1.0);
}
