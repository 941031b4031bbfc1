#include "forward_worker.hpp"

#include <algorithm>
#include <limits>
#include <new>

#include "js_args.hpp"

namespace {
// Node 20 caps one ArrayBuffer at 4 GiB (FACTS.md).
constexpr uint64_t kMaxOutputBytes = uint64_t{1} << 32;
}  // namespace

ForwardArgs parseForwardArgs(const Napi::CallbackInfo& info, const Library& library, int64_t rowLength, bool native) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw Napi::TypeError::New(env, "forward: tokens must be an Int32Array");
  Napi::Int32Array tokens = info[0].As<Napi::Int32Array>();
  size_t n = tokens.ElementLength();
  if (n < 1 || n > static_cast<size_t>(library.maxTokensValue))
    throw Napi::RangeError::New(env, "forward: " + std::to_string(n) + " tokens; this model takes 1 to " +
                                         std::to_string(library.maxTokensValue) + " per call");
  // The library checks startPos against its context; here only that startPos + n fits an int32.
  int64_t startPos = toInt64(info[1], "forward: startPos", 0, INT32_MAX - static_cast<int64_t>(n));
  if (!info[2].IsBoolean()) throw Napi::TypeError::New(env, "forward: allLogits must be a boolean");
  bool allLogits = info[2].As<Napi::Boolean>().Value();

  size_t rows = allLogits ? n : 1;
  uint64_t count = static_cast<uint64_t>(rows) * static_cast<uint64_t>(rowLength);
  if (count * sizeof(float) > kMaxOutputBytes)
    throw Napi::RangeError::New(env, "forward: logits of " + std::to_string(rows) + " tokens × " +
                                         std::to_string(rowLength) +
                                         " exceed Node's 4 GiB ArrayBuffer limit; pass fewer tokens");
  // NaN, so that a logit the library forgot to write cannot pass for a real 0.
  constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
  ForwardArgs args{std::vector<int32_t>(tokens.Data(), tokens.Data() + n), static_cast<int32_t>(startPos), allLogits, {}, nullptr};
  if (native) {
    try {
      args.native = std::make_unique<std::vector<float>>(count, kNaN);
    } catch (const std::bad_alloc&) {  // a rejection, as V8's own allocation failure is
      throw Napi::RangeError::New(env, "forward: out of memory for the logits of " + std::to_string(rows) + " tokens × " +
                                           std::to_string(rowLength) + " floats; pass fewer tokens or allLogits false");
    }
  } else {
    args.logits = Napi::Float32Array::New(env, count);
    std::fill(args.logits.Data(), args.logits.Data() + count, kNaN);
  }
  return args;
}
