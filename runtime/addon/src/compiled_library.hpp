#pragma once
#include <napi.h>

#include <memory>
#include <string>
#include <vector>

#include "mc_abi.h"

/** The entry points of one dlopen'ed model library, checked against mc_abi.h. */
struct Library {
  explicit Library(const std::string& path);  // throws std::runtime_error naming the path

  std::string path;
  mc_abi_version_fn abiVersion;
  mc_specialization_fn specialization;
  mc_weight_count_fn weightCount;
  mc_weight_name_fn weightName;
  mc_max_tokens_fn maxTokens;
  mc_max_seq_len_fn maxSeqLen;
  mc_vocab_local_fn vocabLocal;
  mc_state_bytes_fn stateBytes;
  mc_create_fn create;
  mc_forward_fn forward;
  mc_destroy_fn destroy;
  /** Optional: present in libraries built for tensor parallelism (TP > 1). */
  mc_set_comm_fn setComm = nullptr;
  /** Optional: present in GPU libraries, which all-reduce through NCCL. */
  mc_nccl_unique_id_fn ncclUniqueId = nullptr;
  /** mc_nccl_unique_id into `id` through guardedCall: "" or the one line (the library named). */
  std::string makeNcclId(uint8_t* id) const;
  /** Optional: present in GPU libraries (the machine checks of mc_create, before any weight is read). */
  mc_check_device_fn checkDevice = nullptr;
  /** Optional, all three or none: KV-cache snapshots (libraries built from templates/ have them). */
  mc_kv_bytes_fn kvBytes = nullptr;
  mc_kv_save_fn kvSave = nullptr;
  mc_kv_load_fn kvLoad = nullptr;

  /** The compile-time constants, read once at load. */
  std::string specializationKey;
  std::vector<std::string> weightNames;
  int32_t maxTokensValue, maxSeqLenValue, vocabLocalValue;
  int64_t stateBytesValue;
};

/**
 * JS class CompiledLibrary(path): .path, .specialization, .weightCount, .weightNames, .maxTokens,
 * .maxSeqLen, .vocabLocal, .stateBytes, .checkDevice(rank, device). There is no close(): a library
 * is never dlclose'd.
 */
class CompiledLibrary : public Napi::ObjectWrap<CompiledLibrary> {
 public:
  static Napi::Function define(Napi::Env env);
  explicit CompiledLibrary(const Napi::CallbackInfo& info);

  std::shared_ptr<const Library> library() const { return library_; }

 private:
  Napi::Value path(const Napi::CallbackInfo& info);
  Napi::Value specialization(const Napi::CallbackInfo& info);
  Napi::Value weightCount(const Napi::CallbackInfo& info);
  Napi::Value weightNames(const Napi::CallbackInfo& info);
  Napi::Value maxTokens(const Napi::CallbackInfo& info);
  Napi::Value maxSeqLen(const Napi::CallbackInfo& info);
  Napi::Value vocabLocal(const Napi::CallbackInfo& info);
  Napi::Value stateBytes(const Napi::CallbackInfo& info);
  Napi::Value checkDevice(const Napi::CallbackInfo& info);

  std::shared_ptr<const Library> library_;
};
