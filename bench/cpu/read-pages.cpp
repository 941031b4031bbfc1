// A plain two-thread read pass over a file's bytes in three places: the file mapped (4 KiB page
// cache pages), a copy in anonymous memory on 4 KiB pages, and a copy on transparent huge pages
// (MADV_HUGEPAGE). Passes alternate between the three, 12 rounds, so a drift of the machine's memory
// speed falls on all alike; prints best and median GB/s of each. Behind change 10 of
// bench/RESULTS.md (loadModel's weights: 'copy').
//
//   g++ -std=c++20 -O2 -march=native -fopenmp bench/cpu/read-pages.cpp -o .bench/bin/read-pages
//   OMP_NUM_THREADS=2 .bench/bin/read-pages .bench/weights/dense-300m-f32/consolidated.safetensors
#include <fcntl.h>
#include <immintrin.h>
#include <omp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

namespace {
/** GB/s of one pass summing every 64-byte line of p[0..n), the threads on contiguous halves. */
double readPass(const char* p, size_t n) {
  const auto t = std::chrono::steady_clock::now();
  float total = 0;
#pragma omp parallel reduction(+ : total)
  {
    const int T = omp_get_num_threads(), id = omp_get_thread_num();
    const size_t chunk = (n / T) & ~size_t(4095);
    const char* b = p + id * chunk;
    const char* e = id == T - 1 ? p + (n & ~size_t(255)) : b + chunk;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;  // four chains: adds never wait on each other
    for (const char* q = b; q < e; q += 256) {
      a0 = _mm512_add_ps(a0, _mm512_loadu_ps(reinterpret_cast<const float*>(q)));
      a1 = _mm512_add_ps(a1, _mm512_loadu_ps(reinterpret_cast<const float*>(q + 64)));
      a2 = _mm512_add_ps(a2, _mm512_loadu_ps(reinterpret_cast<const float*>(q + 128)));
      a3 = _mm512_add_ps(a3, _mm512_loadu_ps(reinterpret_cast<const float*>(q + 192)));
    }
    total += _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  if (total == 12345.f) std::puts("");  // keeps the sum alive
  return double(n) / s / 1e9;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return std::fprintf(stderr, "usage: read-pages FILE\n"), 2;
  const int fd = open(argv[1], O_RDONLY);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) return std::perror(argv[1]), 1;
  const size_t n = size_t(st.st_size), huge = size_t(2) << 20, rounded = (n + huge - 1) / huge * huge;
  auto* file = static_cast<char*>(mmap(nullptr, n, PROT_READ, MAP_PRIVATE, fd, 0));
  auto* anon = static_cast<char*>(mmap(nullptr, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  auto* raw = static_cast<char*>(mmap(nullptr, rounded + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  auto* thp = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(raw) + huge - 1) / huge * huge);
  if (file == MAP_FAILED || anon == MAP_FAILED || raw == MAP_FAILED) return std::perror("mmap"), 1;
  madvise(thp, rounded, MADV_HUGEPAGE);
  std::memcpy(anon, file, n);
  std::memcpy(thp, file, n);
  const char* names[3] = {"file", "anon4k", "anonTHP"};
  const char* where[3] = {file, anon, thp};
  std::vector<double> gbs[3];
  for (int round = 0; round < 12; ++round)
    for (int v = 0; v < 3; ++v) gbs[v].push_back(readPass(where[v], n));
  for (int v = 0; v < 3; ++v) {
    std::vector<double> sorted = gbs[v];
    std::sort(sorted.begin(), sorted.end());
    std::printf("%-8s best %.1f median %.1f GB/s  rounds:", names[v], sorted.back(), sorted[sorted.size() / 2]);
    for (double b : gbs[v]) std::printf(" %.0f", b);
    std::printf("\n");
  }
}
