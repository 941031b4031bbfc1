#pragma once
#include <napi.h>

#include <cstdint>
#include <memory>
#include <string>

/**
 * One whole file mapped read-only. Shared (shared_ptr) by the JS MappedFile and every model whose
 * weights point into it, so the pages stay mapped until the last user is gone.
 */
struct Mapping {
  explicit Mapping(const std::string& path);  // throws std::runtime_error naming the path
  ~Mapping();
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  std::string path;
  const uint8_t* data = nullptr;
  uint64_t size = 0;
  // Identity of the file that was mapped (fstat of the open descriptor, not of the path), so JS
  // can check it is the file it validated and not one renamed over it since.
  double dev = 0, ino = 0, mtimeMs = 0;
};

/** JS class MappedFile(path): .path, .size, .identity, .closed, .readHeader(maxBytes), .close(). */
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
  Napi::Value readHeader(const Napi::CallbackInfo& info);
  void close(const Napi::CallbackInfo& info);

  std::shared_ptr<const Mapping> mapping_;
  // Kept after close() so that error messages and reports can still name the file.
  std::string path_;
  uint64_t size_ = 0;
  double dev_ = 0, ino_ = 0, mtimeMs_ = 0;
};
