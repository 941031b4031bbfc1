#pragma once
#include <napi.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "communicator.hpp"
#include "kv_snapshot.hpp"
#include "model_handle.hpp"

/** The ranks of one tensor-parallel model: run together, logits gathered over the vocabulary. */
struct TpState {
  std::vector<std::shared_ptr<ModelHandle>> ranks;
  std::vector<int32_t> vocabStart;
  int32_t vocabLocal;
  int32_t vocabSize;
  std::unique_ptr<Communicator> communicator;

  /**
   * Runs every rank on its own thread, gathers [rows, vocab_local] slices into [rows, vocab], then
   * calls `done` with "" or the first rank's message, on the thread of the rank that finished last.
   * The pointers and this TpState must stay valid until then (ModelHandle::forwardThen).
   */
  void forwardThen(const int32_t* tokens, int32_t n, int32_t startPos, float* out, bool allLogits,
                   std::function<void(std::string)> done);
  /** KV snapshots of every rank (kv_snapshot.hpp). */
  int64_t kvBytes(int32_t nPositions) const { return kvSnapshotBytes(ranks, nPositions); }
  std::string copyKv(bool save, int32_t nPositions, uint8_t* data) { return copyKvSnapshot(ranks, save, nPositions, data); }
};

/**
 * JS class TpGroup(instances: ModelInstance[], vocabSize, threadsPerRank): takes over the instances
 * (rank i = instances[i]). .forward(tokens, startPos, allLogits) → Promise<Float32Array> of full
 * logits, .kvBytes(nPositions), .saveKv(nPositions) → Promise<ArrayBuffer>, .loadKv(snapshot,
 * nPositions) → Promise<void> (kv_snapshot.hpp), .close(), .closed. One call at a time.
 */
class TpGroup : public Napi::ObjectWrap<TpGroup> {
 public:
  static Napi::Function define(Napi::Env env);
  explicit TpGroup(const Napi::CallbackInfo& info);

  /** Called on the JS thread when a forward has finished, either way (ForwardCall::settle). */
  void forwardFinished() { busy_ = false; }

 private:
  Napi::Value forward(const Napi::CallbackInfo& info);
  Napi::Value kvBytes(const Napi::CallbackInfo& info) { return kvBytesValue(info, state_); }
  Napi::Value saveKv(const Napi::CallbackInfo& info) { return queueKv(info, this, state_, busy_, true); }
  Napi::Value loadKv(const Napi::CallbackInfo& info) { return queueKv(info, this, state_, busy_, false); }
  void close(const Napi::CallbackInfo& info);
  Napi::Value closed(const Napi::CallbackInfo& info);

  std::shared_ptr<TpState> state_;  // null once closed
  bool busy_ = false;
};
