#include "socket_group.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <thread>

namespace {

constexpr uint32_t kMagic = 0x5054434d;  // "MCTP" in memory on a little-endian machine
constexpr uint32_t kVersion = 1;         // of the wire protocol below
constexpr uint32_t kMaxFingerprint = 4096;
constexpr uint32_t kMaxMessage = 65536;

/** What precedes every message's body on the wire. */
struct Frame {
  uint32_t magic;
  uint32_t kind;
  uint64_t seq;    // the collective it belongs to (0 during the rendezvous)
  uint64_t bytes;  // of the body that follows
};

enum Kind : uint32_t { kHello = 1, kWelcome = 2, kReject = 3, kAgree = 4, kOk = 5, kData = 6, kAbort = 7 };

struct HelloBody {
  uint32_t version;
  int32_t rank;
  int32_t world;
  uint32_t fingerprintBytes;  // followed by that many bytes
};

using Clock = std::chrono::steady_clock;

int remainingMs(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, std::numeric_limits<int>::max()));
}

std::string errnoText(int e) { return std::strerror(e); }

void setNonBlocking(int fd) {
  const int flags = fcntl(fd, F_GETFL, 0);
  fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

void setNoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // small messages (agree, ok) must not wait
}

std::string duration(int ms) { return ms < 1000 ? std::to_string(ms) + " ms" : std::to_string(ms / 1000) + " s"; }

/**
 * What transfer() returns when, during a write, the peer has something to say instead of reading:
 * in this protocol only an abort (or the end of its stream) can come then.
 */
const std::string kPeerSpoke = "\x01";

/**
 * Reads or writes exactly n bytes on a non-blocking socket, waiting at most `silenceMs` for each
 * bit of progress. Returns "" or what went wrong ("closed the connection", "sent nothing for …"),
 * or kPeerSpoke when a write stalls while the peer has sent something.
 */
std::string transfer(int fd, void* data, size_t n, int silenceMs, bool writing) {
  auto* p = static_cast<uint8_t*>(data);
  while (n > 0) {
    pollfd pfd{fd, static_cast<short>(writing ? POLLOUT | POLLIN : POLLIN), 0};
    const int ready = poll(&pfd, 1, silenceMs);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return "poll failed: " + errnoText(errno);
    }
    if (ready == 0)
      return (writing ? "accepted nothing for " : "sent nothing for ") + duration(silenceMs) + " (stopped or hung?)";
    // A peer blocked on its own send does not read: waiting for room would wait out the timeout.
    if (writing && (pfd.revents & POLLOUT) == 0 && (pfd.revents & POLLIN) != 0) return kPeerSpoke;
    const ssize_t done = writing ? ::send(fd, p, n, MSG_NOSIGNAL) : ::recv(fd, p, n, 0);
    if (done < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      if (errno == ECONNRESET || errno == EPIPE) return "closed the connection (its process ended?)";
      return std::string(writing ? "send" : "recv") + " failed: " + errnoText(errno);
    }
    if (done == 0) return "closed the connection (its process ended?)";
    p += done;
    n -= static_cast<size_t>(done);
  }
  return "";
}

std::string sendAll(int fd, const void* data, size_t n, int silenceMs) {
  return transfer(fd, const_cast<void*>(data), n, silenceMs, true);
}
std::string recvAll(int fd, void* data, size_t n, int silenceMs) { return transfer(fd, data, n, silenceMs, false); }

/** One framed message; body may be null when bytes is 0. */
std::string sendMessage(int fd, uint32_t kind, uint64_t seq, const void* body, uint64_t bytes, int silenceMs) {
  const Frame header{kMagic, kind, seq, bytes};
  std::string e = sendAll(fd, &header, sizeof header, silenceMs);
  if (e.empty() && bytes > 0) e = sendAll(fd, body, bytes, silenceMs);
  return e;
}

/** Closes every descriptor in `fds` that is open. */
void closeAll(std::vector<int>& fds) {
  for (int& fd : fds)
    if (fd >= 0) close(fd), fd = -1;
}

/** Binds `port` on every interface: IPv6 with IPv4 mapped where the machine has IPv6, else IPv4. */
int bindAny(uint16_t port) {
  int one = 1, zero = 0;
  int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd >= 0) {
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_any;
    a.sin6_port = htons(port);
    if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return fd;
    const int e = errno;
    close(fd);
    if (e == EADDRINUSE) return errno = e, -1;
  }
  fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  a.sin_port = htons(port);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return fd;
  const int e = errno;
  close(fd);
  return errno = e, -1;
}

/** Rank 0's listening socket. */
int listenOn(uint16_t port, int backlog) {
  const int fd = bindAny(port);
  if (fd < 0) {
    if (errno == EADDRINUSE)
      throw std::runtime_error("rendezvous: MASTER_PORT " + std::to_string(port) +
                               " is already in use on rank 0's machine: choose another port for every rank");
    throw std::runtime_error("rendezvous: cannot listen on port " + std::to_string(port) + ": " + errnoText(errno));
  }
  if (listen(fd, backlog) != 0) {
    const int e = errno;
    close(fd);
    throw std::runtime_error("rendezvous: listen on port " + std::to_string(port) + " failed: " + errnoText(e));
  }
  setNonBlocking(fd);
  return fd;
}

/** A rank's connection to rank 0, retried (rank 0 may start later) until the deadline. */
int connectTo(const std::string& host, uint16_t port, Clock::time_point deadline, int timeoutMs) {
  std::string last = "no attempt";
  for (;;) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    const int gai = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
    if (gai != 0) {
      // Rank 0's name may not exist yet (a service that comes up with it): retry until the deadline.
      if ((gai != EAI_AGAIN && gai != EAI_NONAME && gai != EAI_FAIL) || remainingMs(deadline) == 0)
        throw std::runtime_error("rendezvous: MASTER_ADDR " + host + " cannot be resolved (" + gai_strerror(gai) +
                                 "): set it to rank 0's host name or address");
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min(200, remainingMs(deadline))));
      continue;
    }
    for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
      int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
      if (fd < 0) continue;
      setNonBlocking(fd);
      int rc = connect(fd, a->ai_addr, a->ai_addrlen);
      if (rc != 0 && errno == EINPROGRESS) {
        pollfd pfd{fd, POLLOUT, 0};
        if (poll(&pfd, 1, std::min(remainingMs(deadline), 2000)) == 1) {
          int err = 0;
          socklen_t len = sizeof err;
          getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
          rc = err == 0 ? 0 : -1;
          errno = err;
        } else {
          errno = ETIMEDOUT;
        }
      }
      if (rc == 0) {
        freeaddrinfo(found);
        setNoDelay(fd);
        return fd;
      }
      last = errnoText(errno);
      close(fd);
    }
    freeaddrinfo(found);
    if (remainingMs(deadline) == 0)
      throw std::runtime_error("rendezvous: could not reach rank 0 at " + host + ":" + std::to_string(port) + " within " +
                               duration(timeoutMs) + " (" + last +
                               "): start rank 0 too, and check MASTER_ADDR and MASTER_PORT");
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(100, remainingMs(deadline))));
  }
}

/** Reads one rendezvous message of `kind` (or a rejection) into body; throws with the rejection's text. */
std::string readRendezvous(int fd, uint32_t kind, std::string& body, int silenceMs) {
  Frame header{};
  std::string e = recvAll(fd, &header, sizeof header, silenceMs);
  if (!e.empty()) return e;
  if (header.magic != kMagic) return "sent something that is not mistral-compile's protocol (another program on this port?)";
  if (header.bytes > kMaxFingerprint + sizeof(HelloBody) + kMaxMessage) return "sent an oversized message";
  body.resize(header.bytes);
  e = recvAll(fd, body.data(), body.size(), silenceMs);
  if (!e.empty()) return e;
  if (header.kind == kReject) throw std::runtime_error(body);
  if (header.kind != kind) return "sent message kind " + std::to_string(header.kind) + " where " + std::to_string(kind) + " was due";
  return "";
}

}  // namespace

SocketGroup::SocketGroup(int32_t rank, int32_t world, int32_t timeoutMs, std::vector<int> fds)
    : rank_(rank), world_(world), timeoutMs_(timeoutMs), fds_(std::move(fds)) {}

SocketGroup::~SocketGroup() { closeAll(fds_); }

std::unique_ptr<SocketGroup> SocketGroup::join(const Options& o, const std::function<void(NcclId&)>& makeNcclId,
                                               NcclId& ncclId) {
  if (o.world < 2 || o.rank < 0 || o.rank >= o.world)
    throw std::runtime_error("rendezvous: RANK " + std::to_string(o.rank) + " is not in 0.." + std::to_string(o.world - 1) +
                             " (WORLD_SIZE " + std::to_string(o.world) + ")");
  if (o.fingerprint.size() > kMaxFingerprint) throw std::runtime_error("rendezvous: fingerprint too long");
  ncclId.fill(0);
  const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(o.timeoutMs);
  const int silence = o.timeoutMs;

  if (o.rank != 0) {
    std::vector<int> fds{connectTo(o.host, o.port, deadline, o.timeoutMs)};
    try {
      std::string hello(sizeof(HelloBody), '\0');
      const HelloBody h{kVersion, o.rank, o.world, static_cast<uint32_t>(o.fingerprint.size())};
      std::memcpy(hello.data(), &h, sizeof h);
      hello += o.fingerprint;
      std::string e = sendMessage(fds[0], kHello, 0, hello.data(), hello.size(), silence);
      std::string body;
      // Rank 0 answers once every rank has joined, which may take up to its own timeout.
      if (e.empty()) e = readRendezvous(fds[0], kWelcome, body, o.timeoutMs);
      if (e.empty() && body.size() != ncclId.size()) e = "sent a malformed welcome";
      if (!e.empty())
        throw std::runtime_error("rendezvous: rank 0 at " + o.host + ":" + std::to_string(o.port) + " " + e +
                                 (e.rfind("sent nothing", 0) == 0 ? " (it waits for every rank: did one never start?)" : ""));
      std::memcpy(ncclId.data(), body.data(), ncclId.size());
    } catch (const std::runtime_error& e) {
      closeAll(fds);
      const std::string what = e.what();
      throw std::runtime_error(what.rfind("rendezvous: ", 0) == 0 ? what : "rendezvous: rank 0 refused rank " + std::to_string(o.rank) + ": " + what);
    }
    for (int fd : fds) setNoDelay(fd);
    return std::unique_ptr<SocketGroup>(new SocketGroup(o.rank, o.world, o.timeoutMs, std::move(fds)));
  }

  // Rank 0: accept world - 1 ranks, each announcing itself in a hello.
  int listener = listenOn(o.port, o.world * 2);
  std::vector<int> fds(static_cast<size_t>(o.world), -1);
  auto refuseAll = [&](const std::string& message) {
    for (int fd : fds)
      if (fd >= 0) sendMessage(fd, kReject, 0, message.data(), message.size(), 1000);
    closeAll(fds);
    if (listener >= 0) close(listener);
    throw std::runtime_error("rendezvous: " + message);
  };
  int joined = 0;
  while (joined < o.world - 1) {
    pollfd pfd{listener, POLLIN, 0};
    const int wait = remainingMs(deadline);
    const int ready = wait == 0 ? 0 : poll(&pfd, 1, wait);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) refuseAll("poll on port " + std::to_string(o.port) + " failed: " + errnoText(errno));
    if (ready == 0) {
      std::string missing;
      for (int32_t r = 1; r < o.world; ++r)
        if (fds[static_cast<size_t>(r)] < 0) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
      refuseAll("timed out after " + duration(o.timeoutMs) + " waiting on port " + std::to_string(o.port) +
                " for rank(s) " + missing + " of WORLD_SIZE " + std::to_string(o.world) +
                ": start one process per rank with the same MASTER_ADDR and MASTER_PORT");
    }
    const int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {  // a connection reset before we took it, or out of descriptors for a moment
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    setNoDelay(fd);
    std::string body;
    std::string e;
    try {
      e = readRendezvous(fd, kHello, body, std::max(1, std::min(remainingMs(deadline), 10000)));
    } catch (const std::runtime_error&) {
      e = "sent a rejection";
    }
    HelloBody h{};
    if (e.empty() && body.size() >= sizeof h) std::memcpy(&h, body.data(), sizeof h);
    if (e.empty() && (body.size() < sizeof h || body.size() != sizeof h + h.fingerprintBytes)) e = "sent a malformed hello";
    if (!e.empty()) {  // not one of our ranks (a port scanner, a health check): ignore it
      close(fd);
      continue;
    }
    std::string message;
    const std::string fingerprint = body.substr(sizeof h);
    if (h.version != kVersion)
      message = "rank " + std::to_string(h.rank) + " speaks protocol version " + std::to_string(h.version) + ", rank 0 " +
                std::to_string(kVersion) + ": run the same mistral-compile version on every rank";
    else if (h.world != o.world)
      message = "rank " + std::to_string(h.rank) + " has WORLD_SIZE " + std::to_string(h.world) + ", rank 0 has " +
                std::to_string(o.world) + ": give every rank the same WORLD_SIZE";
    else if (h.rank <= 0 || h.rank >= o.world)
      message = "a process joined as rank " + std::to_string(h.rank) + ", outside 1.." + std::to_string(o.world - 1) +
                " (rank 0 is this process): check RANK";
    else if (fds[static_cast<size_t>(h.rank)] >= 0)
      message = "two processes joined as rank " + std::to_string(h.rank) + ": give every process its own RANK";
    else if (fingerprint != o.fingerprint)
      message = "rank " + std::to_string(h.rank) + " loaded a different model: rank 0 has " + o.fingerprint + ", rank " +
                std::to_string(h.rank) + " has " + fingerprint + "; every rank needs the same checkpoint and build options";
    if (!message.empty()) {
      sendMessage(fd, kReject, 0, message.data(), message.size(), 1000);
      close(fd);
      refuseAll(message);
    }
    fds[static_cast<size_t>(h.rank)] = fd;
    ++joined;
  }
  close(listener);
  listener = -1;
  try {
    if (makeNcclId) makeNcclId(ncclId);
  } catch (const std::exception& e) {
    refuseAll(std::string("rank 0 could not make the NCCL id: ") + e.what());
  }
  for (int32_t r = 1; r < o.world; ++r) {
    const std::string e = sendMessage(fds[static_cast<size_t>(r)], kWelcome, 0, ncclId.data(), ncclId.size(), silence);
    if (!e.empty()) refuseAll("rank " + std::to_string(r) + " " + e + " during the rendezvous");
  }
  return std::unique_ptr<SocketGroup>(new SocketGroup(0, o.world, o.timeoutMs, std::move(fds)));
}

bool SocketGroup::failed() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return !failure_.empty();
}

std::string SocketGroup::failure() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return failure_;
}

void SocketGroup::drop(int32_t peer) {
  int& fd = fds_[static_cast<size_t>(peer)];
  if (fd < 0) return;
  ::shutdown(fd, SHUT_RDWR);
  ::close(fd);
  fd = -1;
}

void SocketGroup::fail(const std::string& message) noexcept {
  try {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!failure_.empty()) return;
      failure_ = message;
    }
    // Tell the others (best effort, briefly): rank 0 every rank still connected, another rank
    // rank 0. Then close every live connection for writing, so that a rank waiting on this one
    // sees the end of its stream at once instead of waiting out the timeout.
    for (int32_t r = rank_ == 0 ? 1 : 0; r < (rank_ == 0 ? world_ : 1); ++r)
      if (fds_[static_cast<size_t>(r)] >= 0) sendMessage(fds_[static_cast<size_t>(r)], kAbort, seq_, message.data(), message.size(), 1000);
    for (int fd : fds_)
      if (fd >= 0) ::shutdown(fd, SHUT_WR);
  } catch (...) {  // out of memory for the message: the group is failed all the same
    std::lock_guard<std::mutex> lock(mutex_);
    if (failure_.empty()) failure_ = "the tensor-parallel group failed";
  }
}

bool SocketGroup::send(int32_t peer, uint32_t kind, const void* body, uint64_t bytes) {
  const std::string who = "tensor-parallel rank " + std::to_string(peer);
  const int fd = fds_[static_cast<size_t>(peer)];
  if (fd < 0) return fail(who + ": its connection was already closed"), false;
  const std::string e = sendMessage(fd, kind, seq_, body, bytes, timeoutMs_);
  if (e.empty()) return true;
  // The peer gave up instead of reading (its abort is waiting), or gave up and ended, so that our
  // write met its closed socket: take its abort, when it is still there to read, so that the group
  // fails with the peer's reason rather than with "closed the connection". Our frame is cut short,
  // so this connection carries nothing more.
  if (e == kPeerSpoke || e.rfind("closed the connection", 0) == 0) {
    receive(peer, kind, nullptr, 0);
    drop(peer);
    // A no-op when receive() has failed the group (with the peer's message, or its own reason).
    return fail(who + (e == kPeerSpoke ? " stopped reading" : " " + e)), false;
  }
  drop(peer);  // a frame cut short: nothing more may be written into this stream
  fail(who + " " + e);
  return false;
}

bool SocketGroup::receive(int32_t peer, uint32_t kind, void* body, uint64_t bytes) {
  const int fd = fds_[static_cast<size_t>(peer)];
  const std::string who = "tensor-parallel rank " + std::to_string(peer);
  if (fd < 0) return fail(who + ": its connection was already closed"), false;
  Frame h{};
  std::string e = recvAll(fd, &h, sizeof h, timeoutMs_);
  if (!e.empty()) return drop(peer), fail(who + " " + e), false;
  if (h.magic != kMagic) return drop(peer), fail(who + " sent a corrupt message"), false;
  if (h.kind == kAbort) {
    std::string message(std::min<uint64_t>(h.bytes, kMaxMessage), '\0');
    if (!recvAll(fd, message.data(), message.size(), 1000).empty() || message.empty()) message = who + " failed";
    drop(peer);
    fail(message);
    return false;
  }
  if (h.kind != kind || h.seq != seq_ || h.bytes != bytes)
    return drop(peer),
           fail(who + " is out of step (message kind " + std::to_string(h.kind) + " of collective " + std::to_string(h.seq) +
                ", " + std::to_string(h.bytes) + " bytes, where kind " + std::to_string(kind) + " of collective " +
                std::to_string(seq_) + ", " + std::to_string(bytes) + " bytes was due)"),
           false;
  if (bytes > 0) {
    e = recvAll(fd, body, bytes, timeoutMs_);
    if (!e.empty()) return drop(peer), fail(who + " " + e), false;
  }
  return true;
}

bool SocketGroup::agree(const ForwardHeader& header) {
  if (failed()) return false;
  ++seq_;
  if (rank_ != 0) return send(0, kAgree, &header, sizeof header) && receive(0, kOk, nullptr, 0);
  for (int32_t r = 1; r < world_; ++r) {
    ForwardHeader theirs{};
    if (!receive(r, kAgree, &theirs, sizeof theirs)) return false;
    if (std::memcmp(&theirs, &header, sizeof header) != 0) {
      auto describe = [](const ForwardHeader& f) {
        return "forward(" + std::to_string(f.nTokens) + " tokens at position " + std::to_string(f.startPos) +
               (f.allLogits ? ", all logits)" : ", last logits)");
      };
      std::string what = describe(theirs) == describe(header) ? "the same call with other token ids" : describe(theirs);
      fail("tensor-parallel rank " + std::to_string(r) + " ran " + what + " where rank 0 ran " + describe(header) +
           ": every rank must make the same calls with the same tokens");
      return false;
    }
  }
  for (int32_t r = 1; r < world_; ++r)
    if (!send(r, kOk, nullptr, 0)) return false;
  return true;
}

void SocketGroup::allReduceSum(void* ctx, int32_t, float* data, int64_t n) {
  // Called from inside a compiled library (C ABI): nothing may escape, whatever happens.
  auto* self = static_cast<SocketGroup*>(ctx);
  auto poison = [&] { std::fill(data, data + n, std::numeric_limits<float>::quiet_NaN()); };
  try {
    const uint64_t bytes = static_cast<uint64_t>(n) * sizeof(float);
    if (self->failed()) return poison();
    ++self->seq_;
    if (self->rank_ != 0) {
      if (!self->send(0, kData, data, bytes) || !self->receive(0, kData, data, bytes)) poison();
      return;
    }
    const int32_t peers = self->world_ - 1;
    self->scratch_.resize(static_cast<size_t>(n) * static_cast<size_t>(peers));
    for (int32_t r = 1; r <= peers; ++r)
      if (!self->receive(r, kData, self->scratch_.data() + static_cast<size_t>(r - 1) * static_cast<size_t>(n), bytes)) return poison();
    for (int64_t i = 0; i < n; ++i) {
      float sum = 0.f;  // rank order from 0.f, as Communicator: the same bits as ranks on threads
      sum += data[i];
      for (int32_t r = 0; r < peers; ++r) sum += self->scratch_[static_cast<size_t>(r) * static_cast<size_t>(n) + static_cast<size_t>(i)];
      data[i] = sum;
    }
    for (int32_t r = 1; r <= peers; ++r)
      if (!self->send(r, kData, data, bytes)) return poison();
  } catch (const std::exception& e) {
    self->fail(std::string("all-reduce on tensor-parallel rank ") + std::to_string(self->rank_) + " failed: " + e.what());
    poison();
  } catch (...) {
    self->fail("all-reduce failed");
    poison();
  }
}

bool SocketGroup::gather(const float* slice, int64_t rows, int64_t vocabLocal, float* out) {
  if (failed()) return false;
  ++seq_;
  const uint64_t sliceBytes = static_cast<uint64_t>(rows * vocabLocal) * sizeof(float);
  const int64_t vocab = vocabLocal * world_;
  const uint64_t fullBytes = static_cast<uint64_t>(rows * vocab) * sizeof(float);
  if (rank_ != 0) return send(0, kData, slice, sliceBytes) && receive(0, kData, out, fullBytes);
  std::vector<float> theirs(static_cast<size_t>(rows * vocabLocal));
  for (int32_t r = 0; r < world_; ++r) {
    const float* from = slice;
    if (r > 0) {
      if (!receive(r, kData, theirs.data(), sliceBytes)) return false;
      from = theirs.data();
    }
    for (int64_t row = 0; row < rows; ++row)
      std::copy(from + row * vocabLocal, from + (row + 1) * vocabLocal, out + row * vocab + r * vocabLocal);
  }
  for (int32_t r = 1; r < world_; ++r)
    if (!send(r, kData, out, fullBytes)) return false;
  return true;
}
