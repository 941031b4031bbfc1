#pragma once
#include <napi.h>

#include <cstdint>
#include <string>

// Argument conversions shared by the classes; each throws a TypeError/RangeError naming `what`.

/** An integer in [min, max] given as a number (exact, at most 2^53) or a bigint (lossless). */
int64_t toInt64(const Napi::Value& value, const std::string& what, int64_t min, int64_t max);

/** A non-empty string without NUL bytes (a file path). */
std::string toPath(const Napi::Value& value, const std::string& what);

/** The object `value` wraps if it was made by `ctor`, else a TypeError naming `what`. */
template <typename T>
T* unwrapAs(const Napi::Value& value, Napi::FunctionReference& ctor, const std::string& what) {
  if (!value.IsObject() || !value.As<Napi::Object>().InstanceOf(ctor.Value()))
    throw Napi::TypeError::New(value.Env(), what + " must be a " + ctor.Value().Get("name").ToString().Utf8Value());
  return T::Unwrap(value.As<Napi::Object>());
}
