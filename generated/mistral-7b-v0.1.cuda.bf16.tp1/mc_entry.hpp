// The argument checks of a model library's entry points (mc_forward, mc_kv_bytes, mc_kv_save,
// mc_kv_load), the same for every backend: a call that does not hold together gets one line naming
// what is wrong and the fix, and nothing runs. The model file (templates/cpu/model.cpp.hbs,
// templates/cuda/model.cu.hbs) passes its plan's validated limits; only its own steps stay there.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>

namespace mc::entry {

/** What a model's calls are checked against: the model file's constants. */
struct Limits {
  int max_tokens;     // most tokens in one forward call (the prefill chunk)
  int vocab;          // vocab_size: token ids are 0 .. vocab - 1
  int max_seq_len;    // the context of full-attention layers
  int max_positions;  // positions one sequence may have, whatever its layers
  bool all_rolling;   // every layer a rolling window: then positions may run past max_seq_len
};

/** err = message, cut to errlen (the runtime's buffers hold 512 bytes). */
inline void set_error(char* err, size_t errlen, const char* message) {
  if (err != nullptr && errlen > 0) std::snprintf(err, errlen, "%s", message);
}

/**
 * Whether mc_forward's arguments hold together for a model (null: none) whose sequence continues
 * at next_pos; if not, the reason and its fix are in err.
 */
inline bool forward_ok(const Limits& limits, const void* model, const int32_t* tokens, const float* logits, int32_t n, int32_t start_pos,
                       int32_t next_pos, char* err, size_t errlen) {
  char message[256];
  if (model == nullptr || tokens == nullptr || logits == nullptr) return set_error(err, errlen, "null argument"), false;
  if (n < 1 || n > limits.max_tokens) {
    std::snprintf(message, sizeof message, "%d tokens in one call; pass 1 to %d (the runtime splits longer prompts)", n, limits.max_tokens);
    return set_error(err, errlen, message), false;
  }
  for (int t = 0; t < n; ++t) {
    if (tokens[t] < 0 || tokens[t] >= limits.vocab) {
      std::snprintf(message, sizeof message, "token id %d at index %d is out of range; ids must be 0..%d (vocab_size %d)", tokens[t], t, limits.vocab - 1,
                    limits.vocab);
      return set_error(err, errlen, message), false;
    }
  }
  // Rolling caches hold only the recent past, so a sequence continues where it stopped or restarts at 0.
  if (start_pos < 0 || (start_pos != 0 && start_pos != next_pos)) {
    std::snprintf(message, sizeof message, "start position %d does not continue the sequence (next position %d); pass %d, or 0 to start over", start_pos,
                  next_pos, next_pos);
    return set_error(err, errlen, message), false;
  }
  if (!limits.all_rolling && int64_t(start_pos) + n > limits.max_seq_len) {
    std::snprintf(message, sizeof message,
                  "positions up to %lld exceed the context of %d tokens (max_seq_len); start a new sequence or rebuild with a larger --max-seq-len",
                  (long long)start_pos + n - 1, limits.max_seq_len);
    return set_error(err, errlen, message), false;
  }
  // Positions stay far below INT32_MAX, so that the kernels' int loop bounds (a key tile past the
  // last position, a decode split's end) never overflow; runtime/model.ts MAX_POSITIONS says the same.
  if (int64_t(start_pos) + n > limits.max_positions) {
    std::snprintf(message, sizeof message, "positions up to %lld pass the %d a sequence may have; start a new sequence at position 0",
                  (long long)start_pos + n - 1, limits.max_positions);
    return set_error(err, errlen, message), false;
  }
  return true;
}

/** Whether a sequence of n positions fits the model: what a snapshot of n positions needs. */
inline bool positions_fit(const Limits& limits, int64_t n) { return n >= 0 && n <= limits.max_positions && (limits.all_rolling || n <= limits.max_seq_len); }

/**
 * Whether a snapshot's arguments hold together (mc_kv_save, mc_kv_load): `expected` is the backend's
 * size of a snapshot of n positions, -1 where they do not fit (positions_fit). If not, the reason is in err.
 */
inline bool snapshot_ok(const Limits& limits, const void* model, int32_t n, const void* data, int64_t bytes, int64_t expected, char* err, size_t errlen) {
  char message[256];
  if (model == nullptr || (data == nullptr && bytes != 0)) return set_error(err, errlen, "null argument"), false;
  if (expected < 0) {
    std::snprintf(message, sizeof message, "a snapshot of %d positions, past the %d a sequence may reach", n,
                  limits.all_rolling ? limits.max_positions : limits.max_seq_len);
    return set_error(err, errlen, message), false;
  }
  if (bytes != expected) {
    std::snprintf(message, sizeof message, "a snapshot of %d positions takes %lld bytes, got %lld", n, (long long)expected, (long long)bytes);
    return set_error(err, errlen, message), false;
  }
  return true;
}

/** Whether a save of n positions takes the sequence the model holds (at next_pos); if not, the reason is in err. */
inline bool save_ok(int32_t n, int32_t next_pos, char* err, size_t errlen) {
  if (n == next_pos) return true;
  char message[256];
  std::snprintf(message, sizeof message, "a snapshot of %d positions of a sequence at position %d; save the sequence the model holds", n, next_pos);
  return set_error(err, errlen, message), false;
}

}  // namespace mc::entry
