#include "mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>

#include "js_args.hpp"

namespace {

std::runtime_error mappingError(const std::string& path, const std::string& problem) {
  return std::runtime_error("cannot map " + path + ": " + problem);
}

// Closes the descriptor on every path out of Mapping's constructor unless released.
struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  int release() { return std::exchange(fd, -1); }
};

// ---- SIGBUS guard ------------------------------------------------------------------------------
// Reading a page of a mapped file beyond the file's current end raises SIGBUS, which kills the
// process: a checkpoint truncated (or rewritten with O_TRUNC) while a forward pass reads it would
// take Node down. changedSinceMapped() catches a change made between calls; this handler covers
// one made during a call: a SIGBUS inside one of our mappings is answered by mapping zero pages
// over the rest of that mapping and marking it faulted. The read is retried, sees zeros, the
// forward finishes, and ModelHandle reports the damage instead of returning its logits. Any other
// SIGBUS goes to the previous handler (ASan's, or the default action).

constexpr int kGuardSlots = 1024;
struct GuardSlot {
  // begin: 0 free, 1 claimed and being set up, else the first byte of a live mapping.
  std::atomic<uintptr_t> begin{0};
  std::atomic<uintptr_t> end{0};
  std::atomic<int> faulted{0};
};
GuardSlot g_slots[kGuardSlots];
struct sigaction g_previous;
std::once_flag g_installed;
uintptr_t g_pageSize = 4096;

void passOn(int sig, siginfo_t* info, void* context) {
  if ((g_previous.sa_flags & SA_SIGINFO) != 0 && g_previous.sa_sigaction != nullptr) {
    g_previous.sa_sigaction(sig, info, context);
    return;
  }
  if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    g_previous.sa_handler(sig);
    return;
  }
  // The default action: restore it. A fault then recurs when the instruction is retried, and the
  // kernel ends the process exactly as without this handler; a sent SIGBUS is sent again.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(SIGBUS, &dfl, nullptr);
  if (info == nullptr || info->si_code <= 0) ::raise(SIGBUS);
}

void onSigbus(int sig, siginfo_t* info, void* context) {
  const int savedErrno = errno;
  const uintptr_t address = info == nullptr ? 0 : reinterpret_cast<uintptr_t>(info->si_addr);
  if (info != nullptr && info->si_code > 0) {  // raised by a fault, not sent by kill()
    for (GuardSlot& slot : g_slots) {
      const uintptr_t begin = slot.begin.load(std::memory_order_acquire);
      if (begin <= 1 || address < begin || address >= slot.end.load(std::memory_order_acquire)) continue;
      const uintptr_t page = address & ~(g_pageSize - 1);
      const uintptr_t end = slot.end.load(std::memory_order_acquire);
      // mmap is a plain system call: safe here in practice, though POSIX does not list it.
      void* zeros = ::mmap(reinterpret_cast<void*>(page), end - page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
      if (zeros != MAP_FAILED) {
        slot.faulted.store(1, std::memory_order_release);
        errno = savedErrno;
        return;
      }
      break;
    }
  }
  errno = savedErrno;
  passOn(sig, info, context);
}

void installGuard() {
  long page = ::sysconf(_SC_PAGESIZE);
  if (page > 0) g_pageSize = static_cast<uintptr_t>(page);
  struct sigaction action {};
  action.sa_sigaction = onSigbus;
  sigemptyset(&action.sa_mask);
  // SA_ONSTACK: Node runs with an alternate signal stack on its main thread; harmless elsewhere.
  action.sa_flags = SA_SIGINFO | SA_ONSTACK;
  ::sigaction(SIGBUS, &action, &g_previous);
}

/** Registers [begin, begin + size) with the guard; returns its slot, or -1 when all are taken. */
int guardRange(const uint8_t* begin, uint64_t size) {
  std::call_once(g_installed, installGuard);
  for (int i = 0; i < kGuardSlots; ++i) {
    uintptr_t expected = 0;
    if (!g_slots[i].begin.compare_exchange_strong(expected, 1)) continue;
    g_slots[i].faulted.store(0);
    g_slots[i].end.store(reinterpret_cast<uintptr_t>(begin) + size, std::memory_order_release);
    g_slots[i].begin.store(reinterpret_cast<uintptr_t>(begin), std::memory_order_release);
    return i;
  }
  return -1;  // more than kGuardSlots live mappings: these are unguarded, still checked between calls
}

void unguard(int slot) {
  if (slot < 0) return;
  g_slots[slot].begin.store(1, std::memory_order_release);
  g_slots[slot].end.store(0);
  g_slots[slot].faulted.store(0);
  g_slots[slot].begin.store(0, std::memory_order_release);
}

/** A transparent huge page: THP backs (and maps with one entry) only 2 MiB-aligned 2 MiB ranges. */
constexpr size_t kHuge = size_t{2} << 20;

/** The first 2 MiB boundary at or after p. */
uint8_t* hugeAligned(void* p) {
  return reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(p) + kHuge - 1) / kHuge * kHuge);
}

int64_t mtimeNs(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + static_cast<int64_t>(st.st_mtim.tv_nsec);
}

}  // namespace

Mapping::Mapping(const std::string& p, bool copyToHugePages) : path(p) {
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
  mtimeNs_ = mtimeNs(st);
  if (copyToHugePages) {
    readCopy(file.fd, st);  // the descriptor closes on return: a copy never looks back at the file
    return;
  }

  // MAP_PRIVATE + PROT_READ: nothing we do can write the checkpoint. MAP_NORESERVE: a checkpoint
  // larger than free RAM + swap must still map; its pages are file-backed and can be dropped.
  // At a 2 MiB-aligned address, with MADV_HUGEPAGE before the first touch: the page cache then
  // reads the file in 2 MiB folios, each mapped by one page-table entry, so decode streams the
  // weights with far fewer TLB misses (bench/RESULTS.md, change 13). Folios the cache already
  // holds keep their size (a file just written is cached in small ones).
  void* reserved = ::mmap(nullptr, static_cast<size_t>(size) + kHuge, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (reserved == MAP_FAILED) throw mappingError(path, std::string("mmap failed: ") + std::strerror(errno));
  uint8_t* start = hugeAligned(reserved);
  void* addr = ::mmap(start, size, PROT_READ, MAP_PRIVATE | MAP_NORESERVE | MAP_FIXED, file.fd, 0);
  if (addr == MAP_FAILED) {
    const int err = errno;
    // (The failed MAP_FIXED may have unmapped part of the reservation already; munmap of a hole is fine.)
    ::munmap(reserved, static_cast<size_t>(size) + kHuge);
    throw mappingError(path, std::string("mmap failed: ") + std::strerror(err));
  }
  // Give back the reservation around the mapping, in whole pages (both mappings end on a page).
  const long pageSize = ::sysconf(_SC_PAGESIZE);
  const uint64_t page = pageSize > 0 ? static_cast<uint64_t>(pageSize) : 4096;
  auto* reservedEnd = static_cast<uint8_t*>(reserved) + (size + kHuge + page - 1) / page * page;
  auto* mappedEnd = start + (size + page - 1) / page * page;
  if (start > reserved) ::munmap(reserved, static_cast<size_t>(start - static_cast<uint8_t*>(reserved)));
  if (reservedEnd > mappedEnd) ::munmap(mappedEnd, static_cast<size_t>(reservedEnd - mappedEnd));
  data = static_cast<const uint8_t*>(addr);
  guardSlot_ = guardRange(data, size);
  fd_ = file.release();
  // Advice only: without THP (or a filesystem whose page cache keeps large folios) the mapping is
  // plain pages, so a failure is ignored. No MADV_WILLNEED: its readahead reads the first
  // megabytes in small pages, and every forward pass faults the rest in 2 MiB at a time anyway.
  (void)::madvise(addr, size, MADV_HUGEPAGE);
}

void Mapping::readCopy(int fd, const struct stat& before) {
  const size_t rounded = (static_cast<size_t>(size) + kHuge - 1) / kHuge * kHuge;
  // One huge page of slack to align the start.
  regionBytes_ = rounded + kHuge;
  region_ = ::mmap(nullptr, regionBytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (region_ == MAP_FAILED) {
    region_ = nullptr;
    throw mappingError(path, std::string("cannot allocate ") + std::to_string(size) + " bytes for a copy: " + std::strerror(errno));
  }
  uint8_t* copy = hugeAligned(region_);
  (void)::madvise(copy, rounded, MADV_HUGEPAGE);  // advice: without THP the copy is plain pages
  auto fail = [&](const std::string& problem) {
    ::munmap(region_, regionBytes_);
    region_ = nullptr;
    return mappingError(path, problem);
  };
  for (uint64_t done = 0; done < size;) {
    const ssize_t n = ::pread(fd, copy + done, static_cast<size_t>(std::min<uint64_t>(size - done, uint64_t{1} << 30)),
                              static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw fail(std::string("read failed: ") + std::strerror(errno));
    if (n == 0) throw fail("it shrank while it was being read; load it again once it is no longer being written");
    done += static_cast<uint64_t>(n);
  }
  struct stat after;
  if (::fstat(fd, &after) != 0 || after.st_size != before.st_size || mtimeNs(after) != mtimeNs(before))
    throw fail("it changed while it was being read; load it again once it is no longer being written");
  (void)::mprotect(copy, rounded, PROT_READ);  // as read-only as the mapping it stands for
  data = copy;
  copied = true;
}

Mapping::~Mapping() {
  unguard(guardSlot_);
  if (region_ != nullptr)
    ::munmap(region_, regionBytes_);
  else if (data != nullptr)
    ::munmap(const_cast<uint8_t*>(data), size);
  if (fd_ >= 0) ::close(fd_);
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22  // Linux 5.14; older headers lack the name, older kernels answer EINVAL
#endif

bool Mapping::populate(uint64_t offset, uint64_t length) const {
  if (copied || length == 0) return true;
  const long pageSize = ::sysconf(_SC_PAGESIZE);
  const uintptr_t page = pageSize > 0 ? static_cast<uintptr_t>(pageSize) : 4096;
  const uintptr_t first = reinterpret_cast<uintptr_t>(data) + offset;
  const uintptr_t begin = first & ~(page - 1), end = first + length;  // madvise rounds the length up to pages
  for (int tries = 0;; ++tries) {
    if (::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_READ) == 0) return true;
    if ((errno == EINTR || errno == EAGAIN) && tries < 100) continue;
    break;
  }
  const int error = errno;
  // Advice, not a requirement: a kernel before 5.14 (EINVAL), or one short of memory to populate
  // with (ENOMEM, e.g. a tight cgroup), leaves the pages to be faulted in by their reader as before.
  if (error == EINVAL || error == ENOMEM) return false;
  const std::string changed = changedSinceMapped();
  if (!changed.empty()) throw std::runtime_error(changed);
  // The file is as it was mapped: EFAULT (a fault that would have been SIGBUS) is then an I/O error,
  // or a truncation this machine cannot see yet (a network file system).
  throw std::runtime_error(path + ": bytes " + std::to_string(offset) + ".." + std::to_string(offset + length) + " could not be read (" +
                           std::strerror(error) + (error == EFAULT ? ": an I/O error, or a truncation not visible here yet, e.g. on NFS)" : ")") +
                           "; check the disk or file system, then load it again");
}

std::string Mapping::changedSinceMapped() const {
  if (copied) return "";  // a private copy: what happens to the file since cannot reach the weights
  const std::string fix = "; load it again once it is no longer being written";
  if (guardSlot_ >= 0 && g_slots[guardSlot_].faulted.load(std::memory_order_acquire) != 0)
    return path + ": was truncated while a model was reading it (its pages past the new end read as zeros)" + fix;
  struct stat st;
  if (::fstat(fd_, &st) != 0) return path + ": cannot check the mapped file (" + std::strerror(errno) + ")" + fix;
  if (static_cast<uint64_t>(st.st_size) < size)
    return path + ": has shrunk from " + std::to_string(size) + " to " + std::to_string(st.st_size) +
           " bytes since it was mapped" + fix;
  if (static_cast<uint64_t>(st.st_size) != size || mtimeNs(st) != mtimeNs_)
    return path + ": has been modified since it was mapped (the weights in memory may no longer be the checkpoint's)" + fix;
  return "";
}

Napi::Function MappedFile::define(Napi::Env env) {
  return DefineClass(env, "MappedFile",
                     {
                         InstanceAccessor<&MappedFile::path>("path"),
                         InstanceAccessor<&MappedFile::size>("size"),
                         InstanceAccessor<&MappedFile::identity>("identity"),
                         InstanceAccessor<&MappedFile::closed>("closed"),
                         InstanceAccessor<&MappedFile::copied>("copied"),
                         InstanceMethod<&MappedFile::readHeader>("readHeader"),
                         InstanceMethod<&MappedFile::populate>("populate"),
                         InstanceMethod<&MappedFile::close>("close"),
                     });
}

MappedFile::MappedFile(const Napi::CallbackInfo& info) : Napi::ObjectWrap<MappedFile>(info) {
  std::string path = toPath(info[0], "MappedFile: path");
  if (!info[1].IsUndefined() && !info[1].IsBoolean()) throw Napi::TypeError::New(info.Env(), "MappedFile: copyToHugePages must be a boolean");
  const bool copy = info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
  try {
    mapping_ = std::make_shared<const Mapping>(path, copy);
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), e.what());
  }
  path_ = mapping_->path;
  copied_ = mapping_->copied;
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

Napi::Value MappedFile::copied(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), copied_); }

Napi::Value MappedFile::readHeader(const Napi::CallbackInfo& info) {
  auto m = mapping(info.Env());
  int64_t maxBytes = toInt64(info[0], "readHeader: maxBytes", 0, INT32_MAX);
  size_t n = static_cast<size_t>(std::min<uint64_t>(static_cast<uint64_t>(maxBytes), m->size));
  std::string changed = m->changedSinceMapped();
  if (!changed.empty()) throw Napi::Error::New(info.Env(), changed);
  // A copy, not an external buffer over the mapping: JS must not hold a view that outlives munmap.
  Napi::Buffer<uint8_t> copy = Napi::Buffer<uint8_t>::Copy(info.Env(), m->data, n);
  changed = m->changedSinceMapped();  // truncated during the copy: the guard gave zeros
  if (!changed.empty()) throw Napi::Error::New(info.Env(), changed);
  return copy;
}

namespace {
/** Mapping::populate off the JS thread; the worker holds the mapping, so close() meanwhile is safe. */
class PopulateWorker : public Napi::AsyncWorker {
 public:
  PopulateWorker(Napi::Env env, std::shared_ptr<const Mapping> mapping, uint64_t offset, uint64_t length, Napi::Promise::Deferred deferred)
      : Napi::AsyncWorker(env, "mistral-compile:populate"), mapping_(std::move(mapping)), offset_(offset), length_(length), deferred_(deferred) {}
  void Execute() override {
    try {
      done_ = mapping_->populate(offset_, length_);
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override { deferred_.Resolve(Napi::Boolean::New(Env(), done_)); }
  void OnError(const Napi::Error& error) override { deferred_.Reject(error.Value()); }

 private:
  std::shared_ptr<const Mapping> mapping_;
  uint64_t offset_, length_;
  bool done_ = false;
  Napi::Promise::Deferred deferred_;
};
}  // namespace

Napi::Value MappedFile::populate(const Napi::CallbackInfo& info) {
  auto m = mapping(info.Env());
  const int64_t size = static_cast<int64_t>(m->size);
  const int64_t offset = toInt64(info[0], "populate: offset", 0, size);
  const int64_t length = toInt64(info[1], "populate: length", 0, size - offset);
  Napi::Promise::Deferred deferred = Napi::Promise::Deferred::New(info.Env());
  (new PopulateWorker(info.Env(), std::move(m), static_cast<uint64_t>(offset), static_cast<uint64_t>(length), deferred))->Queue();
  return deferred.Promise();
}

void MappedFile::close(const Napi::CallbackInfo&) {
  // Drops this object's share only: models created over the file keep it mapped until they close.
  mapping_.reset();
}
