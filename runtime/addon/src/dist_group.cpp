#include "dist_group.hpp"

#include <vector>

#include "addon_data.hpp"
#include "forward_worker.hpp"
#include "js_args.hpp"
#include "model_instance.hpp"

namespace {

/** FNV-1a over the token ids: rank 0 compares it to catch ranks fed different tokens. */
uint64_t hashTokens(const int32_t* tokens, int32_t n) {
  uint64_t h = 1469598103934665603ull;
  const auto* bytes = reinterpret_cast<const uint8_t*>(tokens);
  for (size_t i = 0; i < static_cast<size_t>(n) * sizeof(int32_t); ++i) h = (h ^ bytes[i]) * 1099511628211ull;
  return h;
}

/** Runs the rendezvous and mc_set_comm off the JS thread (peers may take minutes to start). */
class JoinWorker : public Napi::AsyncWorker {
 public:
  JoinWorker(Napi::Env env, DistGroup* owner, Napi::Object ownerObject, std::shared_ptr<DistState> state,
             SocketGroup::Options options, Napi::Promise::Deferred deferred)
      : Napi::AsyncWorker(env, "mistral-compile:join"),
        owner_(owner),
        ownerRef_(Napi::Persistent(ownerObject)),
        state_(std::move(state)),
        options_(std::move(options)),
        deferred_(deferred) {}

  void Execute() override {
    try {
      const Library& library = state_->handle->library();
      std::function<void(SocketGroup::NcclId&)> makeId;
      if (library.ncclUniqueId != nullptr)
        makeId = [&](SocketGroup::NcclId& id) {
          const std::string failed = library.makeNcclId(id.data());
          if (!failed.empty()) throw std::runtime_error(failed);
        };
      SocketGroup::NcclId id{};
      std::unique_ptr<SocketGroup> group = SocketGroup::join(options_, makeId, id);
      mc_comm comm{};
      comm.ctx = group.get();
      comm.world = state_->world;
      comm.threads = state_->threads;
      comm.all_reduce_sum = &SocketGroup::allReduceSum;
      std::copy(id.begin(), id.end(), comm.nccl_id);
      state_->handle->setComm(comm).get();  // a GPU library joins its NCCL group here, with the others
      state_->group = std::move(group);
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    owner_->joinFinished(true);
    deferred_.Resolve(Env().Undefined());
  }
  void OnError(const Napi::Error& error) override {
    owner_->joinFinished(false);
    deferred_.Reject(error.Value());
  }

 private:
  DistGroup* owner_;
  Napi::ObjectReference ownerRef_;
  std::shared_ptr<DistState> state_;
  SocketGroup::Options options_;
  Napi::Promise::Deferred deferred_;
};

}  // namespace

std::string DistState::forward(const int32_t* tokens, int32_t n, int32_t startPos, float* out, bool allLogits) {
  if (group->failed())
    return "the tensor-parallel group failed earlier (" + group->failure() + "); restart every rank";
  std::string local;
  try {
    const SocketGroup::ForwardHeader header{startPos, n, allLogits ? 1 : 0, 0, hashTokens(tokens, n)};
    if (!group->agree(header)) return group->failure();
    const int64_t rows = allLogits ? n : 1;
    std::vector<float> slice(static_cast<size_t>(rows * vocabLocal));
    local = handle->forward(tokens, n, startPos, slice.data(), allLogits);
    if (local.empty()) return group->failed() || !group->gather(slice.data(), rows, vocabLocal, out) ? group->failure() : "";
  } catch (const std::exception& e) {  // out of memory (the library's own exceptions are messages from ModelHandle)
    local = e.what();
  }
  // This rank failed on its own; the others are waiting on it in a collective: tell them. If the
  // group failed first, that is the cause to report (the library then saw NaN or an error).
  if (group->failed()) return group->failure();
  group->fail("tensor-parallel rank " + std::to_string(rank) + " failed: " + local);
  return local;
}

Napi::Function DistGroup::define(Napi::Env env) {
  return DefineClass(env, "DistGroup",
                     {
                         InstanceMethod<&DistGroup::join>("join"),
                         InstanceMethod<&DistGroup::forward>("forward"),
                         InstanceMethod<&DistGroup::kvBytes>("kvBytes"),
                         InstanceMethod<&DistGroup::saveKv>("saveKv"),
                         InstanceMethod<&DistGroup::loadKv>("loadKv"),
                         InstanceMethod<&DistGroup::close>("close"),
                         InstanceAccessor<&DistGroup::closed>("closed"),
                         InstanceAccessor<&DistGroup::failure>("failure"),
                     });
}

DistGroup::DistGroup(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DistGroup>(info) {
  Napi::Env env = info.Env();
  AddonData& data = addonData(env);
  ModelInstance* instance = unwrapAs<ModelInstance>(info[0], data.modelInstance, "DistGroup: instance");
  auto state = std::make_shared<DistState>();
  const int64_t vocabSize = toInt64(info[1], "DistGroup: vocabSize", 1, INT32_MAX);
  state->threads = static_cast<int32_t>(toInt64(info[2], "DistGroup: threads", 0, 4096));
  state->world = static_cast<int32_t>(toInt64(info[4], "DistGroup: world", 2, 4096));
  state->rank = static_cast<int32_t>(toInt64(info[3], "DistGroup: rank", 0, state->world - 1));
  state->handle = instance->takeHandle();
  if (!state->handle) throw Napi::Error::New(env, "DistGroup: the instance is closed or busy");
  state->vocabLocal = state->handle->library().vocabLocalValue;
  if (static_cast<int64_t>(state->vocabLocal) * state->world != vocabSize)
    throw Napi::RangeError::New(env, "DistGroup: " + std::to_string(state->world) + " ranks × vocab_local " +
                                         std::to_string(state->vocabLocal) + " ≠ vocab_size " + std::to_string(vocabSize));
  state_ = std::move(state);
}

Napi::Value DistGroup::join(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Promise::Deferred deferred = Napi::Promise::Deferred::New(env);
  try {
    if (!state_) throw Napi::Error::New(env, "model is closed");
    if (busy_ || joined_) throw Napi::Error::New(env, "DistGroup: join() runs once");
    if (!info[0].IsString()) throw Napi::TypeError::New(env, "join: host must be a string");
    if (!info[3].IsString()) throw Napi::TypeError::New(env, "join: fingerprint must be a string");
    SocketGroup::Options options;
    options.rank = state_->rank;
    options.world = state_->world;
    options.host = info[0].As<Napi::String>().Utf8Value();
    options.port = static_cast<uint16_t>(toInt64(info[1], "join: port", 1, 65535));
    options.timeoutMs = static_cast<int32_t>(toInt64(info[2], "join: timeoutMs", 1, INT32_MAX));
    options.fingerprint = info[3].As<Napi::String>().Utf8Value();
    auto* worker = new JoinWorker(env, this, Value(), state_, std::move(options), deferred);
    worker->Queue();
    busy_ = true;
  } catch (const Napi::Error& e) {
    deferred.Reject(e.Value());
  }
  return deferred.Promise();
}

Napi::Value DistGroup::forward(const Napi::CallbackInfo& info) {
  return queueForward(info, this, state_, busy_, [&](DistState& state) {
    if (!joined_) throw Napi::Error::New(info.Env(), "DistGroup: join() the other ranks first");
    return parseForwardArgs(info, state.handle->library(), static_cast<int64_t>(state.vocabLocal) * state.world);
  });
}

void DistGroup::close(const Napi::CallbackInfo&) { state_.reset(); }

Napi::Value DistGroup::closed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !state_); }

Napi::Value DistGroup::failure(const Napi::CallbackInfo& info) {
  const bool joined = state_ && joined_ && state_->group;
  return Napi::String::New(info.Env(), joined ? state_->group->failure() : std::string());
}
