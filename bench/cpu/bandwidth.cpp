// Memory read bandwidth probe: OpenMP passes over a float array, in GB/s (1e9 bytes/s), as JSON. The
// decode ceiling of a CPU engine is bytes read per token / this figure.
//
//   bandwidth BYTES PASSES           one measurement, then exit
//   bandwidth BYTES PASSES --serve   a measurement per line read from stdin (the buffer stays allocated)
//
// The engine children of bench/cpu/run.ts keep one serving probe and measure between every few decode
// steps: this machine's memory speed drifts between ~30 and ~55 GB/s within seconds, so a decode step
// is compared with the bandwidth of the same moment. Two read patterns, the better taken, so the
// ceiling is what the memory system gives rather than what one access pattern gets: each thread
// reading one contiguous stream, and each thread reading 8 streams in lockstep (how a decode kernel
// reads several weight rows at once).
#include <omp.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

typedef float v16 __attribute__((vector_size(64)));  // one cache line; a zmm register with AVX-512

namespace {
// Sums lines [begin, end) of `x` with 4 independent accumulators, so adds never wait on each other.
float sum_stream(const v16* x, int64_t begin, int64_t end) {
  v16 a = {}, b = {}, c = {}, d = {};
  for (int64_t i = begin; i + 4 <= end; i += 4) a += x[i], b += x[i + 1], c += x[i + 2], d += x[i + 3];
  const v16 s = (a + b) + (c + d);
  float r = 0;
  for (int j = 0; j < 16; ++j) r += s[j];
  return r;
}

// Sums lines [begin, end) as 8 equal streams read in lockstep, one line from each per step.
float sum_streams8(const v16* x, int64_t begin, int64_t end) {
  const int64_t len = (end - begin) / 8;
  v16 acc[8] = {};
  for (int64_t i = 0; i < len; ++i)
    for (int s = 0; s < 8; ++s) acc[s] += x[begin + s * len + i];
  v16 t = {};
  for (int s = 0; s < 8; ++s) t += acc[s];
  float r = 0;
  for (int j = 0; j < 16; ++j) r += t[j];
  return r;
}

/** Best GB/s of each pattern over `passes` passes. */
void measure(const v16* x, int64_t lines, int passes, double best[2], double* sink) {
  best[0] = best[1] = 0;
  for (int p = 0; p < passes; ++p) {
    for (int pattern = 0; pattern < 2; ++pattern) {
      const auto t0 = std::chrono::steady_clock::now();
      double total = 0;
#pragma omp parallel reduction(+ : total)
      {
        const int nt = omp_get_num_threads(), id = omp_get_thread_num();
        const int64_t begin = lines * id / nt, end = lines * (id + 1) / nt;
        total += pattern == 0 ? sum_stream(x, begin, end) : sum_streams8(x, begin, end);
      }
      const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      *sink += total;
      const double gbs = double(lines) * 64 / sec / 1e9;
      if (gbs > best[pattern]) best[pattern] = gbs;
    }
  }
}
}  // namespace

int main(int argc, char** argv) {
  const int64_t bytes = argc > 1 ? std::atoll(argv[1]) : (int64_t(1) << 30);
  const int passes = argc > 2 ? std::atoi(argv[2]) : 6;
  const bool serve = argc > 3 && std::strcmp(argv[3], "--serve") == 0;
  const int64_t lines = bytes / 64;
  v16* x = static_cast<v16*>(std::aligned_alloc(4096, size_t(lines) * 64));
  if (x == nullptr) return std::puts("{\"error\":\"out of memory\"}"), 1;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < lines; ++i) x[i] = v16{} + float(i & 1023) * 1e-3f;  // first touch by the reading thread
  double sink = 0, best[2];
  char line[64];
  do {
    measure(x, lines, passes, best, &sink);
    std::printf("{\"gb_per_s\":%.3f,\"one_stream\":%.3f,\"eight_streams\":%.3f,\"bytes\":%lld,\"passes\":%d,\"threads\":%d,\"checksum\":%.1f}\n",
                best[0] > best[1] ? best[0] : best[1], best[0], best[1], (long long)bytes, passes, omp_get_max_threads(), sink);
    std::fflush(stdout);
  } while (serve && std::fgets(line, sizeof line, stdin) != nullptr);
  std::free(x);
  return 0;
}
