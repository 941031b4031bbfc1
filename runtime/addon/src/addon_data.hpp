#pragma once
#include <napi.h>

// Per-environment constructors, so that an argument can be checked with InstanceOf before it is
// unwrapped: napi_unwrap of an object wrapped by another class would hand back the wrong type.
struct AddonData {
  Napi::FunctionReference mappedFile;
  Napi::FunctionReference compiledLibrary;
  Napi::FunctionReference modelInstance;
};

inline AddonData& addonData(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }
