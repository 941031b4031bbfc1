#pragma once
#include <napi.h>

#include <cstdint>
#include <memory>
#include <string>

/**
 * One whole file mapped read-only, or read once into a private copy on 2 MiB pages. Shared
 * (shared_ptr) by the JS MappedFile and every model whose weights point into it, so the pages stay
 * until the last user is gone.
 *
 * Why a copy: decode streams every weight once per token, and this machine's measured read rate
 * over memory on transparent huge pages is 7-27% above the same bytes on 4 KiB pages, which is all
 * a file mapping can have (bench/RESULTS.md, CPU section). The copy costs one read of the file at
 * load and gives up sharing the page cache with other processes; a GPU model, which copies its
 * weights to the device anyway, keeps the mapping.
 */
struct Mapping {
  /** Throws std::runtime_error naming the path. */
  Mapping(const std::string& path, bool copyToHugePages);
  ~Mapping();
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  /**
   * "" while the mapped file is as it was mapped; else a one-line message. A file truncated (or
   * rewritten in place) under the mapping would feed a model wrong weights or, past its new end,
   * SIGBUS: callers check before every read of the mapping and again after it (see guard below).
   * A file renamed over the path is no change: the mapping holds the old one.
   */
  std::string changedSinceMapped() const;

  /**
   * Reads bytes [offset, offset + length) of the file into the page cache and maps them
   * (MADV_POPULATE_READ, Linux 5.14+), so that a later reader, such as a GPU library copying the
   * weights to the device, finds them in memory: the caller can show a cold load's progress. Blocks
   * (call it off the JS thread). Returns false where the kernel lacks it or is short of memory for
   * it (nothing done: readers fault the pages in), true when done, or on a copy (in memory already);
   * throws std::runtime_error with one line naming the file and ending in a fix otherwise (truncated
   * since it was mapped: the kernel answers EFAULT where a read would SIGBUS; an I/O error).
   */
  bool populate(uint64_t offset, uint64_t length) const;

  std::string path;
  const uint8_t* data = nullptr;
  uint64_t size = 0;
  /** Whether data is a private copy (on huge pages where the kernel gives them) rather than the mapped file. */
  bool copied = false;
  // Identity of the file that was mapped (fstat of the open descriptor, not of the path), so JS
  // can check it is the file it validated and not one renamed over it since.
  double dev = 0, ino = 0, mtimeMs = 0;

 private:
  int fd_ = -1;              // kept open for changedSinceMapped's fstat
  int64_t mtimeNs_ = 0;      // st_mtim as mapped, exact
  int guardSlot_ = -1;       // this mapping's entry in the SIGBUS guard, or -1 if the guard is full
  void* region_ = nullptr;   // a copy's anonymous mapping (data lies inside it, 2 MiB aligned)
  size_t regionBytes_ = 0;

  void readCopy(int fd, const struct stat& before);
};

/**
 * JS class MappedFile(path, copyToHugePages = false): .path, .size, .identity, .copied, .closed,
 * .readHeader(maxBytes), .populate(offset, length) → Promise<boolean>, .close().
 */
class MappedFile : public Napi::ObjectWrap<MappedFile> {
 public:
  static Napi::Function define(Napi::Env env);
  explicit MappedFile(const Napi::CallbackInfo& info);

  /** The mapping, or a JS Error if this MappedFile was closed. */
  std::shared_ptr<const Mapping> mapping(Napi::Env env) const;

 private:
  Napi::Value path(const Napi::CallbackInfo& info);
  Napi::Value size(const Napi::CallbackInfo& info);
  Napi::Value identity(const Napi::CallbackInfo& info);
  Napi::Value closed(const Napi::CallbackInfo& info);
  Napi::Value copied(const Napi::CallbackInfo& info);
  Napi::Value readHeader(const Napi::CallbackInfo& info);
  Napi::Value populate(const Napi::CallbackInfo& info);
  void close(const Napi::CallbackInfo& info);

  std::shared_ptr<const Mapping> mapping_;
  // Kept after close() so that error messages and reports can still name the file.
  std::string path_;
  uint64_t size_ = 0;
  bool copied_ = false;
  double dev_ = 0, ino_ = 0, mtimeMs_ = 0;
};
