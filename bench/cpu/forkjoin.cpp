// What one OpenMP fork/join costs on this machine: 100000 `omp parallel for` regions over a
// trivial loop, guided like the decode products (bench/RESULTS.md, "Not worth trying: fewer
// fork/joins"; 0.8 µs a region on 2 Zen 4 cores).
//
//   g++ -O2 -fopenmp bench/cpu/forkjoin.cpp -o .bench/bin/forkjoin && OMP_NUM_THREADS=2 .bench/bin/forkjoin
#include <omp.h>

#include <chrono>
#include <cstdio>

int main() {
  float buf[256] = {};
  for (int rep = 0; rep < 3; ++rep) {
    const int n = 100000;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) {
#pragma omp parallel for schedule(guided)
      for (int j = 0; j < 64; ++j) buf[omp_get_thread_num() % 256] += float(j);
    }
    const auto t1 = std::chrono::steady_clock::now();
    std::printf("%.2f us per region (%d threads)\n", std::chrono::duration<double, std::micro>(t1 - t0).count() / n, omp_get_max_threads());
  }
  return buf[0] < 0 ? 1 : 0;  // keeps the loop's stores observable
}
