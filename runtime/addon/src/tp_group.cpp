#include "tp_group.hpp"

#include "forward_worker.hpp"

#include <atomic>
#include <limits>
#include <string>

#include "addon_data.hpp"
#include "js_args.hpp"
#include "model_instance.hpp"

void TpState::forwardThen(const int32_t* tokens, int32_t n, int32_t startPos, float* out, bool allLogits,
                          std::function<void(std::string)> done) {
  const size_t world = ranks.size();
  const int64_t rows = allLogits ? n : 1;
  // What the ranks share until the last of them finishes. It owns no handle: it is let go on the
  // ranks' threads, where the last reference to a ModelHandle must never be (model_handle.hpp).
  struct Gather {
    // One rank's rows are the whole rows: it writes the caller's (NaN-filled) buffer itself, with no
    // slice to allocate and copy after every decode step. Several ranks' slices start as NaN too: a
    // logit a rank forgot to write must not pass for a real 0.
    std::vector<std::vector<float>> slices;
    std::vector<std::string> errors;
    std::atomic<size_t> left;
    std::function<void(std::string)> done;
  };
  auto gather = std::make_shared<Gather>();
  gather->slices.assign(world == 1 ? 0 : world, std::vector<float>(static_cast<size_t>(rows * vocabLocal), std::numeric_limits<float>::quiet_NaN()));
  gather->errors.resize(world);
  gather->left = world;
  gather->done = std::move(done);
  // The last rank to finish gathers the slices (this TpState lives until `done` has run: its caller
  // holds it) and reports. Each rank runs on its model's own thread (kept for the model's life: a new
  // thread per call would also start a new OpenMP team per call).
  for (size_t r = 0; r < world; ++r) {
    ranks[r]->forwardThen(tokens, n, startPos, world == 1 ? out : gather->slices[r].data(), allLogits,
                          [this, gather, r, rows, out](std::string error) {
                            gather->errors[r] = std::move(error);
                            if (--gather->left != 0) return;
                            // every rank checks the same arguments before any collective: the first message is the one
                            for (const std::string& e : gather->errors)
                              if (!e.empty()) return gather->done(e);
                            for (size_t q = 0; q < gather->slices.size(); ++q)
                              for (int64_t row = 0; row < rows; ++row)
                                std::copy(gather->slices[q].begin() + row * vocabLocal, gather->slices[q].begin() + (row + 1) * vocabLocal,
                                          out + row * vocabSize + vocabStart[q]);
                            gather->done("");
                          });
  }
}

Napi::Function TpGroup::define(Napi::Env env) {
  return DefineClass(env, "TpGroup",
                     {
                         InstanceMethod<&TpGroup::forward>("forward"),
                         InstanceMethod<&TpGroup::kvBytes>("kvBytes"),
                         InstanceMethod<&TpGroup::saveKv>("saveKv"),
                         InstanceMethod<&TpGroup::loadKv>("loadKv"),
                         InstanceMethod<&TpGroup::close>("close"),
                         InstanceAccessor<&TpGroup::closed>("closed"),
                     });
}

TpGroup::TpGroup(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TpGroup>(info) {
  Napi::Env env = info.Env();
  AddonData& data = addonData(env);
  if (!info[0].IsArray()) throw Napi::TypeError::New(env, "TpGroup: instances must be an array");
  Napi::Array list = info[0].As<Napi::Array>();
  if (list.Length() < 1) throw Napi::RangeError::New(env, "TpGroup: needs at least one instance");
  auto state = std::make_shared<TpState>();
  state->vocabSize = static_cast<int32_t>(toInt64(info[1], "TpGroup: vocabSize", 1, INT32_MAX));
  int32_t threads = static_cast<int32_t>(toInt64(info[2], "TpGroup: threadsPerRank", 0, 4096));
  for (uint32_t i = 0; i < list.Length(); ++i) {
    ModelInstance* instance = unwrapAs<ModelInstance>(list.Get(i), data.modelInstance, "TpGroup: instances[" + std::to_string(i) + "]");
    std::shared_ptr<ModelHandle> handle = instance->takeHandle();
    if (!handle) throw Napi::Error::New(env, "TpGroup: instances[" + std::to_string(i) + "] is closed or busy");
    state->ranks.push_back(handle);
  }
  state->vocabLocal = state->ranks[0]->library().vocabLocalValue;
  const int32_t world = static_cast<int32_t>(state->ranks.size());
  if (static_cast<int64_t>(state->vocabLocal) * world != state->vocabSize)
    throw Napi::RangeError::New(env, "TpGroup: " + std::to_string(world) + " ranks × vocab_local " +
                                         std::to_string(state->vocabLocal) + " ≠ vocab_size " + std::to_string(state->vocabSize));
  for (int32_t r = 0; r < world; ++r) state->vocabStart.push_back(r * state->vocabLocal);
  state->communicator = std::make_unique<Communicator>(world, threads);
  if (world > 1) {
    mc_comm comm = state->communicator->comm();
    const Library& library = state->ranks[0]->library();
    if (library.ncclUniqueId != nullptr) {
      const std::string failed = library.makeNcclId(comm.nccl_id);
      if (!failed.empty()) throw Napi::Error::New(env, failed);
    }
    // Every rank at once, each on its model's thread: a GPU library's NCCL initialisation waits
    // until every rank has joined.
    std::vector<std::future<void>> joining;
    for (int32_t r = 0; r < world; ++r) joining.push_back(state->ranks[static_cast<size_t>(r)]->setComm(comm));
    std::vector<std::string> errors(static_cast<size_t>(world));
    for (int32_t r = 0; r < world; ++r) {
      try {
        joining[static_cast<size_t>(r)].get();
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(r)] = e.what();
      }
    }
    for (const std::string& e : errors)
      if (!e.empty()) throw Napi::Error::New(env, e);
  }
  state_ = std::move(state);
}

Napi::Value TpGroup::forward(const Napi::CallbackInfo& info) {
  return queueForwardOnThreads(info, this, state_, busy_,
                               [&](TpState& state) { return parseForwardArgs(info, state.ranks[0]->library(), state.vocabSize, true); });
}

void TpGroup::close(const Napi::CallbackInfo&) { state_.reset(); }

Napi::Value TpGroup::closed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !state_); }
