// Decode attention alone: mc::attention of one query token (T = 1) over 64, 600 and 1000 cached
// positions, with the dense benchmark model's shapes (head_dim 64, 4 KV heads of 4 query heads each,
// f32, a cache of 1024 slots), best of 2000 calls (keys and values in cache). Behind the attention
// figure of "Why f32 decode stops at 76%" in bench/RESULTS.md.
//
//   g++ -std=c++20 -O3 -march=native -fopenmp -Iruntime/abi -Itemplates/include bench/cpu/attention-decode.cpp -o .bench/bin/attention-decode
//   OMP_NUM_THREADS=2 .bench/bin/attention-decode
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "mc_cpu.hpp"

int main() {
  constexpr int D = 64, GROUP = 4, KV_HEADS = 4, SLOTS = 1024;
  std::vector<float> q(GROUP * KV_HEADS * D), out(q.size()), scratch(size_t(omp_get_max_threads()) * GROUP * SLOTS);
  std::vector<float> k(size_t(KV_HEADS) * SLOTS * D), v(size_t(SLOTS) * KV_HEADS * D);
  std::mt19937 rng(1);
  std::normal_distribution<float> dist;
  for (auto* x : {&q, &k, &v})
    for (float& e : *x) e = dist(rng);
  for (int context : {64, 600, 1000}) {
    const int32_t position = context - 1;
    double best = 1e9;
    for (int r = 0; r < 2000; ++r) {
      const auto t = std::chrono::steady_clock::now();
      mc::attention<D, GROUP, KV_HEADS, 0, SLOTS, float>(q.data(), 1, &position, k.data(), v.data(), out.data(), scratch.data());
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count());
    }
    std::printf("context %4d: %.1f us per layer\n", context, best * 1e6);
  }
}
