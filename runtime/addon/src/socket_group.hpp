#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

/**
 * The ranks of one tensor-parallel model in separate processes (on one machine or several), joined
 * over TCP the way torchrun users expect: rank 0 listens on MASTER_PORT, every other rank connects
 * to MASTER_ADDR:MASTER_PORT. A star around rank 0 carries the rendezvous (and a GPU group's NCCL
 * unique id), a check that every rank runs the same forward, the CPU all-reduce and the gather of
 * the logits' vocabulary slices.
 *
 * Rank 0 sums the ranks' buffers in rank order starting from 0.f, exactly as the in-process
 * Communicator does, so a model split over processes gives the same bits as one split over threads.
 *
 * Failure never hangs and never returns made-up numbers: a rank that dies (its connection closes),
 * falls silent for longer than the timeout, or fails its own forward makes the group fail on every
 * rank with a one-line message naming the rank; all-reduces then fill their buffers with NaN and
 * return at once, and every later collective reports that message.
 */
class SocketGroup {
 public:
  struct Options {
    int32_t rank = 0;
    int32_t world = 1;
    std::string host;   // MASTER_ADDR: where rank 0 listens (rank 0 itself binds every interface)
    uint16_t port = 0;  // MASTER_PORT
    int32_t timeoutMs = 600000;  // rendezvous deadline, and the longest silence of a peer inside a collective
    /** What every rank must agree on (library specialization and checkpoint), compared by rank 0. */
    std::string fingerprint;
  };
  using NcclId = std::array<uint8_t, 128>;

  /**
   * Joins the group: returns once every rank has joined, or throws std::runtime_error with a
   * one-line message. Rank 0 calls makeNcclId (if given) once all have joined and sends the id to
   * every rank; `ncclId` receives it on every rank (zeros without one).
   */
  static std::unique_ptr<SocketGroup> join(const Options& options, const std::function<void(NcclId&)>& makeNcclId,
                                           NcclId& ncclId);
  ~SocketGroup();
  SocketGroup(const SocketGroup&) = delete;
  SocketGroup& operator=(const SocketGroup&) = delete;

  int32_t rank() const { return rank_; }
  int32_t world() const { return world_; }

  /** What one forward call runs: every rank must run the same. */
  struct ForwardHeader {
    int32_t startPos;
    int32_t nTokens;
    int32_t allLogits;
    int32_t reserved;
    uint64_t tokensHash;
  };
  /** Checks that every rank is about to run the same forward; false (and failed()) if not. */
  bool agree(const ForwardHeader& header);

  /** mc_comm.all_reduce_sum: sums data[0..n) over the ranks in place; NaN-filled once failed. */
  static void allReduceSum(void* ctx, int32_t rank, float* data, int64_t n);

  /**
   * Gathers each rank's [rows, vocabLocal] slice into full rows [rows, vocabLocal × world] on every
   * rank (rank r's slice at column r × vocabLocal). False (and failed()) if the group failed.
   */
  bool gather(const float* slice, int64_t rows, int64_t vocabLocal, float* out);

  /**
   * Fails the group with `message` (the first failure wins) and sends it on (rank 0 to every rank
   * still connected, another rank to rank 0); then every connection is closed for writing, so no
   * rank waits out the timeout. Also how a rank whose own forward failed tells the others.
   */
  void fail(const std::string& message) noexcept;

  bool failed() const;
  std::string failure() const;

 private:
  SocketGroup(int32_t rank, int32_t world, int32_t timeoutMs, std::vector<int> fds);

  /** Sends one message to `peer`; false (and the group failed, with the peer's abort if it sent one) on error. */
  bool send(int32_t peer, uint32_t kind, const void* body, uint64_t bytes);
  /**
   * Receives the next message from `peer`, which must be of `kind` with exactly `bytes` bytes
   * (written to `body`). False (and the group failed, with the peer's message for an abort) otherwise.
   */
  bool receive(int32_t peer, uint32_t kind, void* body, uint64_t bytes);
  /** Closes the connection to `peer` for good: after a frame cut short, nothing more may go into it. */
  void drop(int32_t peer);

  int32_t rank_;
  int32_t world_;
  int32_t timeoutMs_;
  std::vector<int> fds_;  // rank 0: fds_[r] is rank r's connection (fds_[0] = -1); others: fds_[0] is rank 0's; -1 once dropped
  uint64_t seq_ = 0;      // collectives so far: every message carries it, so a rank out of step is caught
  std::vector<float> scratch_;  // rank 0: the peers' buffers of one all-reduce
  mutable std::mutex mutex_;    // guards failure_ (read from the JS thread by failed())
  std::string failure_;
};
