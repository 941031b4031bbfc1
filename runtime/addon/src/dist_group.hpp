#pragma once
#include <napi.h>

#include <memory>
#include <string>

#include "kv_snapshot.hpp"
#include "model_handle.hpp"
#include "socket_group.hpp"

/** This process's rank of a model whose ranks run in separate processes. */
struct DistState {
  std::unique_ptr<SocketGroup> group;  // first: outlives the model, whose communicator points at it
  std::shared_ptr<ModelHandle> handle;
  int32_t rank;
  int32_t world;
  int32_t vocabLocal;
  int32_t threads;

  /**
   * Checks with the other ranks that they run the same call, runs this rank (meeting the others in
   * the library's all-reduces), then gathers the vocabulary slices into full logits rows.
   */
  std::string forward(const int32_t* tokens, int32_t n, int32_t startPos, float* out, bool allLogits);
  /** KV snapshots of this process's rank (kv_snapshot.hpp): no exchange, every rank makes the same calls. */
  int64_t kvBytes(int32_t nPositions) const { return kvSnapshotBytes({handle}, nPositions); }
  std::string copyKv(bool save, int32_t nPositions, uint8_t* data) { return copyKvSnapshot({handle}, save, nPositions, data); }
};

/**
 * JS class DistGroup(instance, vocabSize, threads, rank, world): takes over one ModelInstance (this
 * process's rank). .join(host, port, timeoutMs, fingerprint) → Promise<void> meets the other ranks
 * (runtime/addon/src/socket_group.hpp); then .forward(tokens, startPos, allLogits) → Promise of full
 * logits, the same on every rank. .close(), .closed, .failure (the group's error, or "").
 */
class DistGroup : public Napi::ObjectWrap<DistGroup> {
 public:
  static Napi::Function define(Napi::Env env);
  explicit DistGroup(const Napi::CallbackInfo& info);

  void forwardFinished() { busy_ = false; }
  void joinFinished(bool ok) {
    busy_ = false;
    joined_ = ok;
  }

 private:
  Napi::Value join(const Napi::CallbackInfo& info);
  Napi::Value forward(const Napi::CallbackInfo& info);
  Napi::Value kvBytes(const Napi::CallbackInfo& info) { return kvBytesValue(info, state_); }
  Napi::Value saveKv(const Napi::CallbackInfo& info) { return queueKv(info, this, state_, busy_, true); }
  Napi::Value loadKv(const Napi::CallbackInfo& info) { return queueKv(info, this, state_, busy_, false); }
  void close(const Napi::CallbackInfo& info);
  Napi::Value closed(const Napi::CallbackInfo& info);
  Napi::Value failure(const Napi::CallbackInfo& info);

  std::shared_ptr<DistState> state_;  // null once closed
  bool busy_ = false;
  bool joined_ = false;
};
