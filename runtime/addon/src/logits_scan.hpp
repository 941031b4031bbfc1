#pragma once
#include <napi.h>

#include <cstddef>
#include <cstdint>

/**
 * One row of logits: the index of its first largest value (the greedy token, as runtime/sampling.ts's
 * argmax picks it), or -(i + 1) where value i is the row's first NaN or infinity (no token can be
 * drawn from it). n >= 1.
 */
int64_t scanLogits(const float* row, size_t n);

/** scanLogits(row: Float32Array): number, for the runtime's generate() (runtime/native.ts). */
Napi::Value scanLogitsJs(const Napi::CallbackInfo& info);
