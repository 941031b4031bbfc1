#pragma once

#include <napi.h>

/** probeCudaDriver(): null where the NVIDIA driver sees a GPU (or cannot be judged), else why not, in words. */
Napi::Value probeCudaDriver(const Napi::CallbackInfo& info);
