#include "model_handle.hpp"

#include <stdexcept>

#include "model_call.hpp"

namespace {
// A one-line message; the ABI asks libraries to NUL-terminate within errlen, we enforce it anyway.
constexpr size_t kErrLen = 1024;
}  // namespace

ModelHandle::ModelHandle(std::shared_ptr<const Library> library, std::vector<std::shared_ptr<const Mapping>> mappings,
                         std::vector<mc_weight> weights, int32_t rank, int32_t device)
    : library_(std::move(library)), mappings_(std::move(mappings)), weights_(std::move(weights)) {
  char err[kErrLen] = {0};
  std::string threw;
  model_ = thread_.run([&] {
    mc_model* model = nullptr;
    threw = guardedCall("mc_create", [&] {
      model = library_->create(weights_.data(), static_cast<int32_t>(weights_.size()), rank, device, err, kErrLen);
    });
    return model;
  });
  if (!threw.empty()) throw std::runtime_error(library_->path + ": " + threw);
  err[kErrLen - 1] = '\0';
  if (model_ == nullptr)
    throw std::runtime_error(library_->path + ": mc_create failed: " +
                             (err[0] != '\0' ? std::string(err) : std::string("no message")));
}

// Runs on the JS thread or a libuv worker, never on thread_ (jobs hold a raw `this`, and the last
// shared_ptr is let go by JS or a ForwardWorker): ~SerialThread cannot join itself.
// An exception from mc_destroy is dropped: nothing is left to report it to, and out of a destructor
// it would end the process (std::terminate).
ModelHandle::~ModelHandle() {
  if (model_ != nullptr)
    thread_.run([&] { (void)guardedCall("mc_destroy", [&] { library_->destroy(model_); }); });
}

std::future<std::string> ModelHandle::forwardAsync(const int32_t* tokens, int32_t nTokens, int32_t startPos,
                                                   float* logits, bool allLogits) {
  return thread_.submit([=] { return forwardHere(tokens, nTokens, startPos, logits, allLogits); });
}

void ModelHandle::forwardThen(const int32_t* tokens, int32_t nTokens, int32_t startPos, float* logits, bool allLogits,
                              std::function<void(std::string)> done) {
  thread_.post([=, this, done = std::move(done)] {
    // forwardHere guards the library's call; this guard is for what else could throw (out of memory
    // for a message): `done` must run whatever happens, or the promise would never settle.
    done(guardedCall("mc_forward", [&] { return forwardHere(tokens, nTokens, startPos, logits, allLogits); }));
  });
}

std::string ModelHandle::forwardHere(const int32_t* tokens, int32_t nTokens, int32_t startPos, float* logits,
                                     bool allLogits) {
  // The weights are the mapped checkpoint: refuse a file changed since it was mapped, and report
  // one truncated during this call (whose pages the SIGBUS guard replaced with zeros).
  std::string changed = changedSinceMapped();
  if (!changed.empty()) return changed;
  char err[kErrLen] = {0};
  int32_t rc = 0;
  const std::string threw = guardedCall("mc_forward", [&] {
    rc = library_->forward(model_, tokens, nTokens, startPos, logits, allLogits ? 1 : 0, err, kErrLen);
  });
  err[kErrLen - 1] = '\0';
  changed = changedSinceMapped();
  if (!changed.empty()) return changed;
  if (!threw.empty()) return threw;
  if (rc == 0) return "";
  return err[0] != '\0' ? std::string(err) : "mc_forward returned " + std::to_string(rc) + " without a message";
}

std::future<std::string> ModelHandle::copyKvAsync(bool save, int32_t nPositions, void* data, int64_t bytes) {
  return thread_.submit([=, this]() -> std::string {
    char err[kErrLen] = {0};
    int32_t rc = 0;
    const char* what = save ? "mc_kv_save" : "mc_kv_load";
    const std::string threw = guardedCall(what, [&] {
      rc = save ? library_->kvSave(model_, nPositions, data, bytes, err, kErrLen)
                : library_->kvLoad(model_, nPositions, data, bytes, err, kErrLen);
    });
    if (!threw.empty()) return library_->path + ": " + threw;
    err[kErrLen - 1] = '\0';
    if (rc == 0) return "";
    return library_->path + ": " + what + " failed: " + (err[0] != '\0' ? std::string(err) : std::string("no message"));
  });
}

std::string ModelHandle::changedSinceMapped() const {
  for (const auto& mapping : mappings_) {
    std::string changed = mapping->changedSinceMapped();
    if (!changed.empty()) return changed;
  }
  return "";
}

std::future<void> ModelHandle::setComm(const mc_comm& comm) {
  return thread_.submit([this, comm] {
    if (library_->setComm == nullptr)
      throw std::runtime_error(library_->path + ": not built for tensor parallelism (no mc_set_comm)");
    char err[kErrLen] = {0};
    int32_t rc = 0;
    const std::string threw = guardedCall("mc_set_comm", [&] {
      rc = library_->setComm(model_, &comm, err, kErrLen);
    });
    if (!threw.empty()) throw std::runtime_error(library_->path + ": " + threw);
    if (rc != 0) {
      err[kErrLen - 1] = '\0';
      throw std::runtime_error(library_->path + ": mc_set_comm failed: " +
                               (err[0] != '\0' ? std::string(err) : std::string("no message")));
    }
  });
}
