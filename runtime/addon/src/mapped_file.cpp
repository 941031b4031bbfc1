#include "mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "js_args.hpp"

namespace {

std::runtime_error mappingError(const std::string& path, const std::string& problem) {
  return std::runtime_error("cannot map " + path + ": " + problem);
}

// Closes the descriptor on every path out of Mapping's constructor; the mapping outlives it.
struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

Mapping::Mapping(const std::string& p) : path(p) {
  Fd file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (file.fd < 0) throw mappingError(path, std::strerror(errno));
  struct stat st;
  if (::fstat(file.fd, &st) != 0) throw mappingError(path, std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw mappingError(path, "not a regular file");
  if (st.st_size <= 0) throw mappingError(path, "the file is empty");
  size = static_cast<uint64_t>(st.st_size);
  // Same arithmetic as Node's fs.Stats, so identity compares equal to fs.statSync(path).
  dev = static_cast<double>(st.st_dev);
  ino = static_cast<double>(st.st_ino);
  mtimeMs = static_cast<double>(st.st_mtim.tv_sec) * 1e3 + static_cast<double>(st.st_mtim.tv_nsec) / 1e6;

  // MAP_PRIVATE + PROT_READ: nothing we do can write the checkpoint. MAP_NORESERVE: a checkpoint
  // larger than free RAM + swap must still map; its pages are file-backed and can be dropped.
  void* addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE | MAP_NORESERVE, file.fd, 0);
  if (addr == MAP_FAILED) throw mappingError(path, std::string("mmap failed: ") + std::strerror(errno));
  data = static_cast<const uint8_t*>(addr);
  // Every forward pass reads every weight: start readahead now. Advice only, so failure is ignored.
  (void)::madvise(addr, size, MADV_WILLNEED);
}

Mapping::~Mapping() {
  if (data != nullptr) ::munmap(const_cast<uint8_t*>(data), size);
}

Napi::Function MappedFile::define(Napi::Env env) {
  return DefineClass(env, "MappedFile",
                     {
                         InstanceAccessor<&MappedFile::path>("path"),
                         InstanceAccessor<&MappedFile::size>("size"),
                         InstanceAccessor<&MappedFile::identity>("identity"),
                         InstanceAccessor<&MappedFile::closed>("closed"),
                         InstanceMethod<&MappedFile::readHeader>("readHeader"),
                         InstanceMethod<&MappedFile::close>("close"),
                     });
}

MappedFile::MappedFile(const Napi::CallbackInfo& info) : Napi::ObjectWrap<MappedFile>(info) {
  std::string path = toPath(info[0], "MappedFile: path");
  try {
    mapping_ = std::make_shared<const Mapping>(path);
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), e.what());
  }
  path_ = mapping_->path;
  size_ = mapping_->size;
  dev_ = mapping_->dev;
  ino_ = mapping_->ino;
  mtimeMs_ = mapping_->mtimeMs;
}

std::shared_ptr<const Mapping> MappedFile::mapping(Napi::Env env) const {
  if (!mapping_) throw Napi::Error::New(env, "mapped file " + path_ + " is closed");
  return mapping_;
}

Napi::Value MappedFile::path(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), path_); }

Napi::Value MappedFile::size(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(size_));
}

Napi::Value MappedFile::identity(const Napi::CallbackInfo& info) {
  Napi::Object id = Napi::Object::New(info.Env());
  id.Set("dev", dev_);
  id.Set("ino", ino_);
  id.Set("mtimeMs", mtimeMs_);
  id.Set("size", static_cast<double>(size_));
  return id;
}

Napi::Value MappedFile::closed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !mapping_); }

Napi::Value MappedFile::readHeader(const Napi::CallbackInfo& info) {
  auto m = mapping(info.Env());
  int64_t maxBytes = toInt64(info[0], "readHeader: maxBytes", 0, INT32_MAX);
  size_t n = static_cast<size_t>(std::min<uint64_t>(static_cast<uint64_t>(maxBytes), m->size));
  // A copy, not an external buffer over the mapping: JS must not hold a view that outlives munmap.
  return Napi::Buffer<uint8_t>::Copy(info.Env(), m->data, n);
}

void MappedFile::close(const Napi::CallbackInfo&) {
  // Drops this object's share only: models created over the file keep it mapped until they close.
  mapping_.reset();
}
