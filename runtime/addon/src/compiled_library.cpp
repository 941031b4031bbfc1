#include "compiled_library.hpp"

#include <dlfcn.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "js_args.hpp"
#include "model_call.hpp"

namespace {

std::runtime_error loadError(const std::string& path, const std::string& problem) {
  return std::runtime_error("cannot load compiled library " + path + ": " + problem);
}

template <typename Fn>
Fn symbol(void* handle, const std::string& path, const char* name) {
  dlerror();
  void* address = dlsym(handle, name);
  if (address == nullptr)
    throw loadError(path, std::string("it does not export ") + name +
                              " (built from another ABI or not a mistral-compile library)");
  return reinterpret_cast<Fn>(address);
}

}  // namespace

Library::Library(const std::string& p) : path(p) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) throw loadError(path, std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw loadError(path, "not a regular file");
  // A name without '/' would be searched for in the system's library paths instead.
  std::string openPath = path.find('/') == std::string::npos ? "./" + path : path;
  // RTLD_NODELETE and never dlclose: unloading a library that used OpenMP crashed the process at
  // exit (FACTS.md). RTLD_LOCAL: two model libraries export the same names and must not interpose.
  void* handle = dlopen(openPath.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  if (handle == nullptr) {
    const char* why = dlerror();
    throw loadError(path, why != nullptr ? why : "dlopen failed");
  }

  abiVersion = symbol<mc_abi_version_fn>(handle, path, "mc_abi_version");
  uint32_t version = abiVersion();
  if (version != MC_ABI_VERSION)
    throw loadError(path, "it was built for ABI version " + std::to_string(version) + ", this runtime speaks " +
                              std::to_string(MC_ABI_VERSION) + "; rebuild the model with this mistral-compile");
  specialization = symbol<mc_specialization_fn>(handle, path, "mc_specialization");
  weightCount = symbol<mc_weight_count_fn>(handle, path, "mc_weight_count");
  weightName = symbol<mc_weight_name_fn>(handle, path, "mc_weight_name");
  maxTokens = symbol<mc_max_tokens_fn>(handle, path, "mc_max_tokens");
  maxSeqLen = symbol<mc_max_seq_len_fn>(handle, path, "mc_max_seq_len");
  vocabLocal = symbol<mc_vocab_local_fn>(handle, path, "mc_vocab_local");
  stateBytes = symbol<mc_state_bytes_fn>(handle, path, "mc_state_bytes");
  create = symbol<mc_create_fn>(handle, path, "mc_create");
  forward = symbol<mc_forward_fn>(handle, path, "mc_forward");
  destroy = symbol<mc_destroy_fn>(handle, path, "mc_destroy");
  setComm = reinterpret_cast<mc_set_comm_fn>(dlsym(handle, "mc_set_comm"));  // optional
  ncclUniqueId = reinterpret_cast<mc_nccl_unique_id_fn>(dlsym(handle, "mc_nccl_unique_id"));  // optional
  checkDevice = reinterpret_cast<mc_check_device_fn>(dlsym(handle, "mc_check_device"));  // optional
  kvBytes = reinterpret_cast<mc_kv_bytes_fn>(dlsym(handle, "mc_kv_bytes"));  // optional, all three or none
  kvSave = reinterpret_cast<mc_kv_save_fn>(dlsym(handle, "mc_kv_save"));
  kvLoad = reinterpret_cast<mc_kv_load_fn>(dlsym(handle, "mc_kv_load"));
  if (kvBytes == nullptr || kvSave == nullptr || kvLoad == nullptr) kvBytes = nullptr, kvSave = nullptr, kvLoad = nullptr;

  const char* key = specialization();
  specializationKey = key != nullptr ? key : "";
  int32_t count = weightCount();
  if (count < 0) throw loadError(path, "mc_weight_count() = " + std::to_string(count) + " is negative");
  for (int32_t i = 0; i < count; ++i) {
    const char* name = weightName(i);
    weightNames.push_back(name != nullptr ? name : "weight #" + std::to_string(i));
  }
  maxTokensValue = maxTokens();
  maxSeqLenValue = maxSeqLen();
  vocabLocalValue = vocabLocal();
  stateBytesValue = stateBytes();
  if (maxTokensValue < 1 || maxSeqLenValue < 1 || vocabLocalValue < 1)
    throw loadError(path, "its limits are not positive (max_tokens " + std::to_string(maxTokensValue) +
                              ", max_seq_len " + std::to_string(maxSeqLenValue) + ", vocab_local " +
                              std::to_string(vocabLocalValue) + ")");
}

Napi::Function CompiledLibrary::define(Napi::Env env) {
  return DefineClass(env, "CompiledLibrary",
                     {
                         InstanceAccessor<&CompiledLibrary::path>("path"),
                         InstanceAccessor<&CompiledLibrary::specialization>("specialization"),
                         InstanceAccessor<&CompiledLibrary::weightCount>("weightCount"),
                         InstanceAccessor<&CompiledLibrary::weightNames>("weightNames"),
                         InstanceAccessor<&CompiledLibrary::maxTokens>("maxTokens"),
                         InstanceAccessor<&CompiledLibrary::maxSeqLen>("maxSeqLen"),
                         InstanceAccessor<&CompiledLibrary::vocabLocal>("vocabLocal"),
                         InstanceAccessor<&CompiledLibrary::stateBytes>("stateBytes"),
                         InstanceMethod<&CompiledLibrary::checkDevice>("checkDevice"),
                     });
}

CompiledLibrary::CompiledLibrary(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CompiledLibrary>(info) {
  std::string path = toPath(info[0], "CompiledLibrary: path");
  try {
    library_ = std::make_shared<const Library>(path);
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), e.what());
  }
}

Napi::Value CompiledLibrary::path(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), library_->path);
}
Napi::Value CompiledLibrary::specialization(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), library_->specializationKey);
}
Napi::Value CompiledLibrary::weightCount(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(library_->weightNames.size()));
}
Napi::Value CompiledLibrary::weightNames(const Napi::CallbackInfo& info) {
  Napi::Array names = Napi::Array::New(info.Env(), library_->weightNames.size());
  for (uint32_t i = 0; i < library_->weightNames.size(); ++i) names.Set(i, library_->weightNames[i]);
  return names;
}
Napi::Value CompiledLibrary::maxTokens(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), library_->maxTokensValue);
}
Napi::Value CompiledLibrary::maxSeqLen(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), library_->maxSeqLenValue);
}
Napi::Value CompiledLibrary::vocabLocal(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), library_->vocabLocalValue);
}
Napi::Value CompiledLibrary::stateBytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(library_->stateBytesValue));
}
Napi::Value CompiledLibrary::checkDevice(const Napi::CallbackInfo& info) {
  const int64_t rank = toInt64(info[0], "checkDevice: rank", 0, INT32_MAX);
  const int64_t device = toInt64(info[1], "checkDevice: device", 0, INT32_MAX);
  if (library_->checkDevice == nullptr) return Napi::Boolean::New(info.Env(), false);  // a CPU library: no device to check
  char err[512] = {0};
  if (library_->checkDevice(static_cast<int32_t>(rank), static_cast<int32_t>(device), err, sizeof err) != 0)
    throw Napi::Error::New(info.Env(), library_->path + ": mc_check_device failed: " + std::string(err));
  return Napi::Boolean::New(info.Env(), true);
}

std::string Library::makeNcclId(uint8_t* id) const {
  char err[512] = {0};
  int32_t rc = 0;
  const std::string threw = guardedCall("mc_nccl_unique_id", [&] {
    rc = ncclUniqueId(id, err, sizeof err);
  });
  if (!threw.empty()) return path + ": " + threw;
  err[sizeof err - 1] = '\0';
  return rc == 0 ? "" : path + ": mc_nccl_unique_id failed: " + std::string(err);
}
