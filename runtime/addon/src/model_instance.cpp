#include "model_instance.hpp"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "addon_data.hpp"
#include "compiled_library.hpp"
#include "js_args.hpp"
#include "mapped_file.hpp"

namespace {

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

/**
 * weights[i] as an mc_weight pointing into the mapping of the file that holds it (its `file`, an
 * index into `mappings`; 0 when absent), after checking it lies inside that file.
 */
mc_weight toWeight(const Napi::Value& value, size_t i, const Library& library, const std::vector<std::shared_ptr<const Mapping>>& mappings) {
  Napi::Env env = value.Env();
  std::string what = "weights[" + std::to_string(i) + "] (" + library.weightNames[i] + ")";
  if (!value.IsObject()) throw Napi::TypeError::New(env, what + " must be an object");
  Napi::Object w = value.As<Napi::Object>();
  const Napi::Value fileValue = w.Get("file");
  const int64_t file = fileValue.IsUndefined() ? 0 : toInt64(fileValue, what + ".file", 0, static_cast<int64_t>(mappings.size()) - 1);
  const Mapping& mapping = *mappings[static_cast<size_t>(file)];
  int64_t offset = toInt64(w.Get("offset"), what + ".offset", 0, kInt64Max);
  int64_t bytes = toInt64(w.Get("bytes"), what + ".bytes", 1, kInt64Max);
  int64_t rows = toInt64(w.Get("rows"), what + ".rows", 1, kInt64Max);
  int64_t cols = toInt64(w.Get("cols"), what + ".cols", 1, kInt64Max);
  int64_t rowStride = toInt64(w.Get("rowStride"), what + ".rowStride", cols, kInt64Max);
  uint64_t size = mapping.size;
  // Written as two comparisons so that offset + bytes cannot overflow.
  if (static_cast<uint64_t>(bytes) > size || static_cast<uint64_t>(offset) > size - static_cast<uint64_t>(bytes))
    throw Napi::RangeError::New(env, what + ": bytes [" + std::to_string(offset) + ", " +
                                         std::to_string(static_cast<uint64_t>(offset) + static_cast<uint64_t>(bytes)) +
                                         ") lie outside " + mapping.path + " (" + std::to_string(size) + " bytes)");
  // The slice's last element must lie inside [offset, offset + bytes), even at one byte per element:
  // geometry larger than its byte range would send the library past the end of the mapping.
  // (rows - 1) * rowStride + cols, checked against overflow.
  if (rows - 1 > (kInt64Max - cols) / rowStride || (rows - 1) * rowStride + cols > bytes)
    throw Napi::RangeError::New(env, what + ": " + std::to_string(rows) + " rows of " + std::to_string(cols) +
                                         " at a stride of " + std::to_string(rowStride) + " do not fit its " +
                                         std::to_string(bytes) + " bytes");
  return mc_weight{mapping.data + offset, rowStride, rows, cols};
}

}  // namespace

Napi::Function ModelInstance::define(Napi::Env env) {
  return DefineClass(env, "ModelInstance",
                     {
                         InstanceMethod<&ModelInstance::forward>("forward"),
                         InstanceMethod<&ModelInstance::forwardSync>("forwardSync"),
                         InstanceMethod<&ModelInstance::close>("close"),
                         InstanceAccessor<&ModelInstance::closed>("closed"),
                     });
}

ModelInstance::ModelInstance(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelInstance>(info) {
  Napi::Env env = info.Env();
  AddonData& data = addonData(env);
  auto library = unwrapAs<CompiledLibrary>(info[0], data.compiledLibrary, "ModelInstance: library")->library();
  // One MappedFile (the checkpoint), or an array of them (its shards, in the order weights[i].file counts).
  std::vector<std::shared_ptr<const Mapping>> mappings;
  if (info[1].IsArray()) {
    Napi::Array files = info[1].As<Napi::Array>();
    if (files.Length() == 0) throw Napi::RangeError::New(env, "ModelInstance: mappedFiles is empty");
    for (uint32_t i = 0; i < files.Length(); ++i)
      mappings.push_back(unwrapAs<MappedFile>(files.Get(i), data.mappedFile, "ModelInstance: mappedFiles[" + std::to_string(i) + "]")->mapping(env));
  } else {
    mappings.push_back(unwrapAs<MappedFile>(info[1], data.mappedFile, "ModelInstance: mappedFile")->mapping(env));
  }
  if (!info[2].IsArray()) throw Napi::TypeError::New(env, "ModelInstance: weights must be an array");
  Napi::Array list = info[2].As<Napi::Array>();
  if (list.Length() != library->weightNames.size())
    throw Napi::RangeError::New(env, "ModelInstance: " + library->path + " expects " +
                                         std::to_string(library->weightNames.size()) + " weights, got " +
                                         std::to_string(list.Length()));
  std::vector<mc_weight> weights;
  weights.reserve(list.Length());
  for (uint32_t i = 0; i < list.Length(); ++i) weights.push_back(toWeight(list.Get(i), i, *library, mappings));
  int32_t rank = static_cast<int32_t>(toInt64(info[3], "ModelInstance: rank", 0, INT32_MAX));
  // The GPU a GPU library runs on: the rank itself unless given (one process per rank: LOCAL_RANK).
  int32_t device = info[4].IsUndefined() ? rank : static_cast<int32_t>(toInt64(info[4], "ModelInstance: device", 0, INT32_MAX));
  try {
    handle_ = std::make_shared<ModelHandle>(std::move(library), std::move(mappings), std::move(weights), rank, device);
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

ForwardArgs ModelInstance::prepareForward(const Napi::CallbackInfo& info, bool native) {
  Napi::Env env = info.Env();
  if (!handle_) throw Napi::Error::New(env, "model is closed");
  if (busy_) throw Napi::Error::New(env, "model is busy: await the previous call");
  const Library& library = handle_->library();
  return parseForwardArgs(info, library, library.vocabLocalValue, native);
}

Napi::Value ModelInstance::forward(const Napi::CallbackInfo& info) {
  return queueForwardOnThreads(info, this, handle_, busy_, [&](ModelHandle&) { return prepareForward(info, true); });
}

Napi::Value ModelInstance::forwardSync(const Napi::CallbackInfo& info) {
  ForwardArgs args = prepareForward(info);
  std::string error = handle_->forward(args.tokens.data(), static_cast<int32_t>(args.tokens.size()), args.startPos,
                                       args.logits.Data(), args.allLogits);
  if (!error.empty()) throw Napi::Error::New(info.Env(), error);
  return args.logits;
}

void ModelInstance::close(const Napi::CallbackInfo&) {
  // A forward in flight holds its own share of the handle: mc_destroy then runs when it settles.
  handle_.reset();
}

Napi::Value ModelInstance::closed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !handle_); }
