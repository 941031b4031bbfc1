#include "js_args.hpp"

#include <cmath>

int64_t toInt64(const Napi::Value& value, const std::string& what, int64_t min, int64_t max) {
  Napi::Env env = value.Env();
  int64_t result;
  if (value.IsBigInt()) {
    bool lossless = false;
    result = value.As<Napi::BigInt>().Int64Value(&lossless);
    if (!lossless) throw Napi::RangeError::New(env, what + " does not fit in 64 bits");
  } else if (value.IsNumber()) {
    double d = value.As<Napi::Number>().DoubleValue();
    // Beyond 2^53 a double no longer holds every integer: a byte offset there may already be wrong.
    if (!std::isfinite(d) || std::trunc(d) != d || std::fabs(d) > 9007199254740992.0)
      throw Napi::RangeError::New(env, what + " must be an integer (a bigint above 2^53), got " +
                                           value.ToString().Utf8Value());
    result = static_cast<int64_t>(d);
  } else {
    throw Napi::TypeError::New(env, what + " must be a number or a bigint");
  }
  if (result < min || result > max)
    throw Napi::RangeError::New(env, what + " = " + std::to_string(result) + " is outside [" +
                                         std::to_string(min) + ", " + std::to_string(max) + "]");
  return result;
}

std::string toPath(const Napi::Value& value, const std::string& what) {
  if (!value.IsString()) throw Napi::TypeError::New(value.Env(), what + " must be a string");
  std::string path = value.As<Napi::String>().Utf8Value();
  if (path.empty() || path.find('\0') != std::string::npos)
    throw Napi::TypeError::New(value.Env(), what + " must be a non-empty path without NUL bytes");
  return path;
}
