#include "forward_worker.hpp"

#include "model_instance.hpp"

ForwardWorker::ForwardWorker(Napi::Env env, ModelInstance* owner, Napi::Object ownerObject,
                             std::shared_ptr<ModelHandle> handle, ForwardArgs args, Napi::Promise::Deferred deferred)
    : Napi::AsyncWorker(env, "mistral-compile:forward"),
      owner_(owner),
      ownerRef_(Napi::Persistent(ownerObject)),
      handle_(std::move(handle)),
      tokens_(std::move(args.tokens)),
      startPos_(args.startPos),
      allLogits_(args.allLogits),
      logitsRef_(Napi::Persistent(static_cast<Napi::Object>(args.logits))),
      logitsData_(args.logits.Data()),
      deferred_(deferred) {}

void ForwardWorker::Execute() {
  std::string error;
  try {
    error = handle_->forward(tokens_.data(), static_cast<int32_t>(tokens_.size()), startPos_, logitsData_, allLogits_);
  } catch (const std::exception& e) {  // a C++ library that lets an exception cross the C ABI
    error = std::string("mc_forward threw: ") + e.what();
  } catch (...) {
    error = "mc_forward threw a non-standard exception";
  }
  if (!error.empty()) SetError(error);
}

void ForwardWorker::OnOK() {
  owner_->forwardFinished();
  deferred_.Resolve(logitsRef_.Value());
}

void ForwardWorker::OnError(const Napi::Error& error) {
  owner_->forwardFinished();
  deferred_.Reject(error.Value());
}
