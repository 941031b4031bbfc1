#pragma once
#include <napi.h>

#include <exception>
#include <string>
#include <type_traits>

// What every call on a model (forward, saveKv, loadKv) shares, whichever thread runs it.

/**
 * Runs f() → "" or a message ("" where f returns nothing: a bare library call), and turns an
 * exception into a message ("<what> threw: …"): a C++ library may let one cross the C ABI, and on a
 * model's or a libuv thread nothing would catch it (std::terminate). ModelHandle calls every library function that runs model code through here:
 * mc_create, mc_forward, mc_kv_save/load, mc_set_comm and mc_destroy; Library::makeNcclId
 * mc_nccl_unique_id (on a libuv thread for DistGroup).
 */
template <typename F>
std::string guardedCall(const char* what, F&& f) {
  try {
    if constexpr (std::is_void_v<decltype(f())>) {
      f();
      return std::string();
    } else {
      return f();
    }
  } catch (const std::exception& e) {
    return std::string(what) + " threw: " + e.what();
  } catch (...) {
    return std::string(what) + " threw a non-standard exception";
  }
}

/**
 * The shape of every async call on a model (forward, saveKv, loadKv): refuses a closed and a busy
 * owner, then `start` (deferred) checks what else it must and queues the work; every Napi::Error is
 * a rejection, never a throw.
 */
template <typename Start>
Napi::Value modelCallPromise(Napi::Env env, bool closed, bool busy, Start start) {
  Napi::Promise::Deferred deferred = Napi::Promise::Deferred::New(env);
  try {
    if (closed) throw Napi::Error::New(env, "model is closed");
    if (busy) throw Napi::Error::New(env, "model is busy: await the previous call");
    start(deferred);
  } catch (const Napi::Error& e) {
    deferred.Reject(e.Value());
  }
  return deferred.Promise();
}
