// Whether a file mapping gets 2 MiB page-table entries on this kernel, and what it takes: maps FILE
// read-only at a 2 MiB-aligned address, optionally drops the file from the page cache first
// (--drop: POSIX_FADV_DONTNEED), advises MADV_HUGEPAGE (--huge) and/or MADV_COLLAPSE (--collapse),
// touches one byte per 4 KiB and prints the time and FilePmdMapped (bench/RESULTS.md, change 13:
// on 6.18/ext4, --drop --huge gives 2 MiB folios; --collapse returns EINVAL).
//
//   g++ -O2 bench/cpu/file-thp.cpp -o .bench/bin/file-thp && .bench/bin/file-thp FILE [--drop] [--huge] [--collapse]
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

int main(int argc, char** argv) {
  if (argc < 2) return std::fprintf(stderr, "usage: file-thp FILE [--drop] [--huge] [--collapse]\n"), 2;
  bool drop = false, huge = false, collapse = false;
  for (int i = 2; i < argc; ++i) {
    drop |= std::strcmp(argv[i], "--drop") == 0;
    huge |= std::strcmp(argv[i], "--huge") == 0;
    collapse |= std::strcmp(argv[i], "--collapse") == 0;
  }
  const int fd = open(argv[1], O_RDONLY);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) return std::perror(argv[1]), 1;
  const size_t len = size_t(st.st_size), H = size_t{2} << 20;
  if (drop) std::printf("POSIX_FADV_DONTNEED: %d\n", posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED));
  void* reserved = mmap(nullptr, len + H, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  char* aligned = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(reserved) + H - 1) & ~uintptr_t(H - 1));
  char* p = static_cast<char*>(mmap(aligned, len, PROT_READ, MAP_PRIVATE | MAP_NORESERVE | MAP_FIXED, fd, 0));
  if (p == MAP_FAILED) return std::perror("mmap"), 1;
  if (huge) std::printf("MADV_HUGEPAGE: %s\n", madvise(p, len, MADV_HUGEPAGE) == 0 ? "ok" : std::strerror(errno));
  if (collapse) std::printf("MADV_COLLAPSE: %s\n", madvise(p, len / H * H, MADV_COLLAPSE) == 0 ? "ok" : std::strerror(errno));
  const auto t0 = std::chrono::steady_clock::now();
  volatile long sum = 0;
  for (size_t i = 0; i < len; i += 4096) sum = sum + p[i];
  const auto t1 = std::chrono::steady_clock::now();
  std::printf("touched %zu MiB in %.2f s\n", len >> 20, std::chrono::duration<double>(t1 - t0).count());
  std::ifstream smaps("/proc/self/smaps_rollup");
  for (std::string line; std::getline(smaps, line);)
    if (line.rfind("FilePmdMapped", 0) == 0 || line.rfind("Rss", 0) == 0) std::printf("%s\n", line.c_str());
  return 0;
}
