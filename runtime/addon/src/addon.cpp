// The runtime addon: generic over every compiled model (nothing model-specific lives here).
// Its JS surface is declared once, in runtime/native.ts.
#include <napi.h>

#include "addon_data.hpp"
#include "compiled_library.hpp"
#include "cuda_probe.hpp"
#include "dist_group.hpp"
#include "logits_scan.hpp"
#include "mapped_file.hpp"
#include "model_instance.hpp"
#include "tp_group.hpp"

namespace {

Napi::Object init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  Napi::Function mappedFile = MappedFile::define(env);
  Napi::Function compiledLibrary = CompiledLibrary::define(env);
  Napi::Function modelInstance = ModelInstance::define(env);
  data->mappedFile = Napi::Persistent(mappedFile);
  data->compiledLibrary = Napi::Persistent(compiledLibrary);
  data->modelInstance = Napi::Persistent(modelInstance);
  env.SetInstanceData(data);  // deleted by Node when the environment goes away
  exports.Set("MappedFile", mappedFile);
  exports.Set("CompiledLibrary", compiledLibrary);
  exports.Set("ModelInstance", modelInstance);
  exports.Set("TpGroup", TpGroup::define(env));
  exports.Set("DistGroup", DistGroup::define(env));
  exports.Set("probeCudaDriver", Napi::Function::New(env, probeCudaDriver, "probeCudaDriver"));
  exports.Set("scanLogits", Napi::Function::New(env, scanLogitsJs, "scanLogits"));
  exports.Set("abiVersion", Napi::Number::New(env, MC_ABI_VERSION));
  return exports;
}

}  // namespace

NODE_API_MODULE(mc_runtime, init)
