#include "cuda_probe.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <string>

// Asks the NVIDIA driver, before a CUDA library is built, whether this machine can run one at all:
// without a driver or a GPU, `--target cuda` should fail at once instead of after minutes of nvcc.
// Only the driver API's oldest, unversioned entry points are used, looked up at run time: the addon
// links nothing of CUDA and loads on machines without it. Anything it cannot judge (a symbol
// missing) counts as "go on": the library's own check (mc_check_device) still runs after the build.

namespace {

using cu_init_fn = int (*)(unsigned int);
using cu_device_get_count_fn = int (*)(int*);
using cu_get_error_name_fn = int (*)(int, const char**);

std::string errorName(void* driver, int code) {
  auto name = reinterpret_cast<cu_get_error_name_fn>(dlsym(driver, "cuGetErrorName"));
  const char* text = nullptr;
  if (name == nullptr || name(code, &text) != 0 || text == nullptr) return std::to_string(code);
  return std::to_string(code) + " (" + text + ")";
}

/** The reason this machine has no usable CUDA device, or "" where the driver sees at least one. */
std::string probe() {
  // Kept loaded (never dlclose'd): the CUDA runtime of the library built next opens the same one.
  void* driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  if (driver == nullptr) {
    const char* why = dlerror();
    return std::string("the NVIDIA driver's libcuda.so.1 cannot be loaded (") + (why != nullptr ? why : "dlopen failed") + ")";
  }
  auto init = reinterpret_cast<cu_init_fn>(dlsym(driver, "cuInit"));
  auto count = reinterpret_cast<cu_device_get_count_fn>(dlsym(driver, "cuDeviceGetCount"));
  if (init == nullptr || count == nullptr) return "";
  // CUDA_VISIBLE_DEVICES="" (or a list naming no GPU) makes cuInit itself answer 100: say which value hid them.
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  const std::string hidden = visible == nullptr ? "" : std::string("; CUDA_VISIBLE_DEVICES=\"") + visible + "\" may hide them";
  if (int r = init(0); r != 0) return "cuInit returned " + errorName(driver, r) + (r == 100 ? hidden : "");
  int devices = 0;
  if (int r = count(&devices); r != 0) return "cuDeviceGetCount returned " + errorName(driver, r);
  if (devices <= 0) return "the driver lists no GPU (cuDeviceGetCount gave 0" + hidden + ")";
  return "";
}

}  // namespace

Napi::Value probeCudaDriver(const Napi::CallbackInfo& info) {
  static const std::string reason = probe();  // cuInit's answer does not change within a process
  if (reason.empty()) return info.Env().Null();
  return Napi::String::New(info.Env(), reason);
}
