// The CUDA emulator's core: runs a kernel's blocks one after another (in a random order) on the CPU, every thread of a
// block a fiber (ucontext) on one OS thread, switching only where CUDA threads synchronize:
// __syncthreads, warp collectives (shuffles, mma.sync, ldmatrix) and warpgroup collectives (wgmma).
// A collective completes when every live thread of its warp (warpgroup) has reached one of the same
// kind; the emulator then computes all lanes' results at once, as the hardware does.
//
// Why: CI has no GPU, and most sessions have none either. This runs the kernels' own source (the
// rendered templates, mc_cuda.cuh, mc_gemm_wgmma.cuh) so that test/gpu/kernels.cu can check them
// against its float64 references anywhere. What it catches beyond wrong arithmetic: a collective
// reached by part of a warp, a barrier some threads never reach (deadlock), shared memory read
// before its cp.async group was waited for (copies land at the wait, or at issue, chosen at random),
// wgmma accumulators used before wait_group (they are written at the wait), a wgmma operand whose
// shared memory changes between issue and wait_group (either way round), copies or wgmma groups
// still in flight at exit, global accesses past an allocation (a guard page follows each), a
// dynamic shared-memory size over the limit or above 48 KB without cudaFuncSetAttribute, and a
// kernel launched with programmatic dependent launch that touches, before its griddepcontrol.wait,
// memory the kernel before it touched (the PDL check, above launch()); blocks run in a random order,
// static shared memory starts each block as junk, and the builds (emulate.ts) start locals as a
// pattern and stop at a misaligned vector access (UBSan).
// A cooperative launch (cudaLaunchAttributeCooperative) holds all its blocks at once, taking turns
// between grid barriers (mc_emu::grid_sync: a block's threads all wait there; the GPU code polls a
// counter instead, which fibers switched only at synchronization would never see move). A launch
// with a cluster shape (cudaLaunchAttributeClusterDimension, sm_90) runs cluster after cluster, the
// blocks of each at once in the same way between cluster barriers, each reaching the others' shared
// memory by rank (distributed shared memory); a block that exits counts as arrived at the cluster's
// barriers (barrier.cluster waits for the threads that have not exited), a read of its shared memory
// afterwards and a cluster over 8 blocks (16 with the non-portable opt-in) are reported. What it
// cannot see: timing, the memory model between warps inside one barrier interval (warps run in a
// random order per round, which finds some of those), a missing fence.proxy.async (the emulator has
// one proxy), bank conflicts, register pressure.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <cxxabi.h>
#include <sys/mman.h>
#include <signal.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cerrno>
#include <cstring>
#include <functional>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <tuple>
#include <vector>

// The built-in variables of the running thread; the scheduler sets them before it resumes a fiber.
// Per OS thread: tensor-parallel ranks run their kernels on threads of their own, at the same time.
inline thread_local uint3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;

namespace mc_emu {

[[noreturn]] inline void fail(const std::string& what);

/** What a fiber is blocked on. */
enum class Wait { none, block, warp, group, pdl, grid, cluster, done };
/** Collective operations; the fibers of one warp (warpgroup) must all reach the same one. */
enum class Op { none, shfl, syncwarp, mma_bf16, mma_f16, ldmatrix_x4_trans, wg_fence, wg_mma_bf16, wg_mma_f16, wg_commit, wg_wait };

inline const char* op_name(Op op) {
  switch (op) {
    case Op::none: return "none";
    case Op::shfl: return "__shfl_sync";
    case Op::syncwarp: return "__syncwarp";
    case Op::mma_bf16: return "mma.sync (bf16)";
    case Op::mma_f16: return "mma.sync (f16)";
    case Op::ldmatrix_x4_trans: return "ldmatrix.x4.trans";
    case Op::wg_fence: return "wgmma.fence";
    case Op::wg_mma_bf16: return "wgmma.mma_async (bf16)";
    case Op::wg_mma_f16: return "wgmma.mma_async (f16)";
    case Op::wg_commit: return "wgmma.commit_group";
    case Op::wg_wait: return "wgmma.wait_group";
  }
  return "?";
}

/** One cp.async: 16 bytes to shared memory, the first `src_bytes` from global memory, the rest zero. */
struct Copy {
  void* dst;
  const void* src;
  int src_bytes;
  void run() const {
    std::memcpy(dst, src, size_t(src_bytes));
    std::memset(static_cast<char*>(dst) + src_bytes, 0, size_t(16 - src_bytes));
  }
};

struct Fiber {
#if !defined(__x86_64__)
  ucontext_t ctx;  // swapcontext's; on x86-64 (switch_stack) only `sp`: a ucontext is ~1 KB, and the
                   // scheduler reads every fiber's `wait` each round, which then missed the cache
#endif
  void* sp = nullptr;  // the saved stack pointer (x86-64 switch)
  uint3 tid;
  int linear = 0;
  Wait wait = Wait::none;
  bool pdl_waited = false;  // this thread has called griddepcontrol.wait
  // cp.async groups of this thread: committed (oldest first) and the one being filled
  std::vector<std::vector<Copy>> cp_groups;
  std::vector<Copy> cp_open;
  // the collective this fiber waits in: its inputs and, once resolved, its outputs
  Op op = Op::none;
  uint32_t in[10] = {};
  uint32_t out[4] = {};
  const void* addr = nullptr;
  float* acc = nullptr;
  uint64_t desc[2] = {};
};

/** One wgmma.mma_async of a warpgroup: D (64 x 128, f32, in its 128 threads' registers) += A · Bᵀ. */
struct WgmmaOp {
  bool bf16;
  uint64_t a, b;
  float* d[128];
  // The operands as shared memory held them at issue: the hardware reads them at some point before
  // the wait, so they must not change in between (checked when the group retires).
  double A[64][16], B[128][16];
};

/** Emulated devices: GPUs' worth of properties, chosen to exercise the kernels' launch logic. */
/** MC_EMU_SMS: the multiprocessors the emulated device reports (default 8: small grids already span it). */
inline int sms_from_env() {
  const char* s = std::getenv("MC_EMU_SMS");
  const int n = s != nullptr ? std::atoi(s) : 0;
  return n > 0 && n <= 1024 ? n : 8;
}

/** MC_EMU_SMEM_KB: the shared memory a block may opt into (default an H100's 227 KB; 99 is an sm_86/sm_89 GPU's). */
inline size_t smem_optin_from_env() {
  const char* s = std::getenv("MC_EMU_SMEM_KB");
  const int kb = s != nullptr ? std::atoi(s) : 0;
  return size_t(kb > 0 && kb <= 1024 ? kb : 227) * 1024;
}

struct Device {
  int count = 8;  // devices, for tensor-parallel ranks (one per device)
  int sms = sms_from_env();  // an H100 has 132: launch choices (tiles, split-K, wgmma) then follow the real ones
  size_t smem_optin = smem_optin_from_env();  // H100: 227 KB of dynamic shared memory per block with the opt-in
  size_t smem_default = 48 * 1024;
  int l2_bytes = 50 * 1024 * 1024;  // H100: caps MC_CUDA_PREFETCH_MB (the emulator has no cache)
};

/** What every thread shares: the devices and the kernels' attributes (set by one thread, launched by another). */
struct Global {
  Device device;
  std::mutex mu;
  std::map<const void*, int> max_dynamic_smem;  // cudaFuncSetAttribute(MaxDynamicSharedMemorySize)
  std::map<const void*, bool> non_portable_cluster;  // cudaFuncSetAttribute(NonPortableClusterSizeAllowed): clusters of up to 16 blocks
  std::atomic<uint64_t> threads{0};
};
inline Global& global() {
  static Global g;
  return g;
}
inline const Device& device() { return global().device; }

/** MC_EMU_SEED: the seed of the warp order and of when cp.async copies land (default 1). */
inline uint64_t seed_from_env() {
  const char* s = std::getenv("MC_EMU_SEED");
  return s != nullptr ? std::strtoull(s, nullptr, 10) : 1;
}

/**
 * MC_EMU_FAULT: which of a build's seeded bugs is on (test/cuda/emulator.test.ts writes each one into
 * the sources as `::mc_emu::fault(n)`, beside the code it breaks), 0 or unset for none: one build
 * holds them all, and each run switches one on.
 */
inline bool fault(int n) {
  static const int on = [] {
    const char* s = std::getenv("MC_EMU_FAULT");
    return s != nullptr ? std::atoi(s) : 0;
  }();
  return on == n;
}

/** Bytes of one fiber's stack. */
constexpr size_t kFiberStack = 256 * 1024;

/** One OS thread's emulation: the block it runs, its CUDA error state, its device and stream capture. */
struct State {
  uint64_t seed = seed_from_env() + global().threads++;  // each thread its own schedule, reproducible in order
  std::mt19937_64 rng{seed};
  cudaError_t last_error = cudaSuccess;  // per thread, as CUDA's is
  int device = 0;                        // cudaSetDevice
  // Stream capture (CUDA graphs; the model captures in cudaStreamCaptureModeThreadLocal): work on the
  // capturing stream is recorded, not run; a graph replays it.
  cudaStream_t capture_stream = nullptr;
  std::vector<std::function<cudaError_t()>>* capture = nullptr;
  // the running block
  std::vector<Fiber> fibers;
  std::vector<char*> stacks;  // the running block's fiber stacks: the thread's own, or a cooperative launch's
  std::vector<char*> owned;   // the thread's own (start_block mapped each after a guard page, kept from block to block)
  Fiber* current = nullptr;
  ucontext_t scheduler;
  void* scheduler_sp = nullptr;
  std::function<void()> body;
  std::string kernel;
  char* smem = nullptr;  // dynamic shared memory of the block
  size_t smem_bytes = 0;
  std::vector<std::vector<std::unique_ptr<WgmmaOp>>> wg_open;                  // per warpgroup: issued, not committed
  std::vector<std::vector<std::vector<std::unique_ptr<WgmmaOp>>>> wg_groups;  // per warpgroup: committed, oldest first
  std::vector<bool> wg_fenced;
  uint64_t launches = 0, switches = 0;
  uint64_t blocks_run = 0;  // blocks begun on this thread: static shared memory is refilled with junk once per block
  // Programmatic dependent launch (the PDL check, before launch() below)
  bool prev_kernel = false;      // the last operation on this thread's device was a kernel (not a copy or a sync)
  std::string prev_kernel_name;  // ... that one
  bool pdl = false;              // the running launch has the PDL attribute
  bool pre_wait = false;         // ... after a kernel, and its running block has not passed griddepcontrol.wait
  bool cooperative = false;      // the running launch is cooperative (its blocks resident together: grid barriers allowed)
  // Thread-block clusters (sm_90): the running launch's cluster shape, and for the running cluster each
  // block's dynamic shared memory by its rank (distributed shared memory) and whether it has exited.
  dim3 cluster = dim3(1, 1, 1);
  std::vector<char*> cluster_smem;
  std::vector<bool> cluster_exited;
  // A model's thread ends with its model, and its stacks with it (left mapped, a process that opens
  // model after model ran into the kernel's map count: 2 mappings a stack, 256 stacks a thread).
  ~State();
};
inline State& state() {
  static thread_local State s;
  return s;
}
inline int current_device() { return state().device; }

/** The shared window: dynamic shared memory starts at shared address 16, not on a 1024-byte boundary (as after static shared memory). */
constexpr uint32_t kSmemBase = 16;

/** The kernel, block and thread (or "host") that a failure happened in. */
inline std::string where() {
  State& s = state();
  if (s.body == nullptr) return "host";
  char buf[160];
  std::snprintf(buf, sizeof buf, " block (%u,%u,%u)", blockIdx.x, blockIdx.y, blockIdx.z);
  std::string w = s.kernel + buf;
  if (s.current != nullptr) w += " thread " + std::to_string(s.current->linear);
  return w;
}
[[noreturn]] inline void fail(const std::string& what) {
  std::fprintf(stderr, "mc_emu: %s: %s (MC_EMU_SEED=%llu)\n", where().c_str(), what.c_str(), (unsigned long long)state().seed);
  std::fflush(stdout);
  std::exit(3);
}

inline uint32_t smem_address(const void* p) {
  State& s = state();
  const char* c = static_cast<const char*>(p);
  if (s.smem == nullptr || c < s.smem || c > s.smem + s.smem_bytes) fail("a shared-memory address outside the block's dynamic shared memory");
  return kSmemBase + uint32_t(c - s.smem);
}
inline char* smem_pointer(uint32_t addr, size_t bytes) {
  State& s = state();
  if (addr < kSmemBase || addr - kSmemBase + bytes > s.smem_bytes) fail("a shared-memory access past the dynamic shared memory (" + std::to_string(addr) + ")");
  return s.smem + (addr - kSmemBase);
}

/** A device allocation's mapping: its body, then a PROT_NONE guard page. */
struct Mapping {
  char* base = nullptr;  // the mmap, page-aligned; the body's pages are [base, base + total - page)
  size_t total = 0;
  int device = 0;        // the allocating thread's device (cudaSetDevice): tensor-parallel ranks have one each
  int prot = PROT_READ | PROT_WRITE;  // the body's protection now (the PDL check narrows it during launches)
  uint8_t prev = 0, now = 0;  // kTouched | kWritten: by the previous kernel on its device, by the running one
};
constexpr uint8_t kTouched = 1, kWritten = 2;
inline size_t page_bytes() {
  static const size_t page = size_t(sysconf(_SC_PAGESIZE));
  return page;
}
inline State::~State() {
  if (current != nullptr) return;  // exit() from inside a block (fail()): this code runs on one of them
  for (char* stack : owned) munmap(stack - page_bytes(), page_bytes() + kFiberStack);
}

/** Every device allocation's mapping, by its first byte; ranks allocate from threads of their own. */
inline std::map<void*, Mapping>& allocations() {
  static std::map<void*, Mapping> m;
  return m;
}
inline std::mutex& allocations_mutex() {
  static std::mutex m;
  return m;
}
/** Device memory: its end is followed by a PROT_NONE page, so that a read or write past it faults. */
inline void* device_alloc(size_t bytes) {
  const size_t page = page_bytes();
  const size_t body = (bytes + 15) / 16 * 16;
  const size_t total = (body + page - 1) / page * page + page;
  char* base = static_cast<char*>(mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (base == MAP_FAILED) return nullptr;
  mprotect(base + total - page, page, PROT_NONE);
  char* p = base + total - page - body;
  std::memset(p, 0xa5, body);  // not zero: a kernel that reads what nothing wrote sees junk, as on a GPU
  std::lock_guard<std::mutex> lock(allocations_mutex());
  Mapping& m = allocations()[p];
  m.base = base, m.total = total, m.device = current_device();
  return p;
}
inline bool device_free(void* p) {
  Mapping mapping;
  {
    std::lock_guard<std::mutex> lock(allocations_mutex());
    auto it = allocations().find(p);
    if (it == allocations().end()) return false;
    mapping = it->second;
    allocations().erase(it);
  }
  munmap(mapping.base, mapping.total);
  return true;
}

/** Whether [p, p + bytes) lies inside one live device allocation (what a global-memory hint may name). */
inline bool in_device_allocation(const void* p, size_t bytes) {
  std::lock_guard<std::mutex> lock(allocations_mutex());
  auto it = allocations().upper_bound(const_cast<void*>(p));
  if (it == allocations().begin()) return false;
  --it;
  const char* start = static_cast<const char*>(it->first);
  const char* end = it->second.base + it->second.total - page_bytes();  // the guard page follows
  const char* c = static_cast<const char*>(p);
  return c >= start && c <= end && bytes <= size_t(end - c);
}

/**
 * L2 prefetches the kernels asked for, {first byte, bytes} in issue order, for checks that a kernel
 * hints exactly what it should (test/gpu/kernels.cu); take_prefetches() empties it.
 */
inline std::vector<std::pair<const char*, size_t>>& prefetch_log() {
  static std::vector<std::pair<const char*, size_t>> log;
  return log;
}
inline std::mutex& prefetch_log_mutex() {
  static std::mutex m;
  return m;
}
inline std::vector<std::pair<const char*, size_t>> take_prefetches() {
  std::lock_guard<std::mutex> lock(prefetch_log_mutex());
  std::vector<std::pair<const char*, size_t>> out;
  out.swap(prefetch_log());
  return out;
}

// ---- the scheduler ----------------------------------------------------------------------------------
// Switching fibers: on x86-64 a plain stack switch that saves the callee-saved registers (glibc's
// swapcontext also saves the signal mask, a system call per switch: half the emulator's time);
// elsewhere swapcontext.
#if defined(__x86_64__)
/** Saves rbp, rbx, r12-r15 on the current stack, stores its pointer in *from, continues on `to`. */
__attribute__((naked, noinline)) static void switch_stack(void** /*from*/, void* /*to*/) {
  __asm__ volatile(
      "pushq %rbp\n pushq %rbx\n pushq %r12\n pushq %r13\n pushq %r14\n pushq %r15\n"
      "movq %rsp, (%rdi)\n movq %rsi, %rsp\n"
      "popq %r15\n popq %r14\n popq %r13\n popq %r12\n popq %rbx\n popq %rbp\n"
      "ret\n");
}
#endif

inline void switch_to_scheduler(Fiber& f) {
#if defined(__x86_64__)
  switch_stack(&f.sp, state().scheduler_sp);
#else
  swapcontext(&f.ctx, &state().scheduler);
#endif
}
inline void switch_to_fiber(Fiber& f) {
#if defined(__x86_64__)
  switch_stack(&state().scheduler_sp, f.sp);
#else
  swapcontext(&state().scheduler, &f.ctx);
#endif
}

/** Back to the scheduler; returns when the scheduler resumes this fiber. */
inline void yield(Wait w) {
  State& s = state();
  Fiber* f = s.current;
  f->wait = w;
  ++s.switches;
  switch_to_scheduler(*f);
}

inline void run_pending_copies(Fiber& f, size_t keep) {
  while (f.cp_groups.size() > keep) {
    for (const Copy& c : f.cp_groups.front()) c.run();
    f.cp_groups.erase(f.cp_groups.begin());
  }
}

inline void fiber_entry() {
  State& s = state();
  s.body();
  Fiber& f = *s.current;
  if (!f.cp_open.empty() || !f.cp_groups.empty()) {
    // Copies still in flight when a thread exits may land in the next block's shared memory.
    bool any = !f.cp_open.empty();
    for (auto& g : f.cp_groups) any = any || !g.empty();
    if (any) fail("the thread exits with cp.async copies not waited for (cp.async.wait_group 0 before exit)");
  }
  const int wg = f.linear / 128;
  if (wg < int(s.wg_open.size()) && (!s.wg_open[wg].empty() || !s.wg_groups[wg].empty()))
    fail("the thread exits with wgmma operations not waited for (wgmma.wait_group 0 before exit)");
  f.wait = Wait::done;
#if defined(__x86_64__)
  switch_to_scheduler(f);  // never resumed
  __builtin_unreachable();
#endif
  // returning ends the context; uc_link takes it back to the scheduler
}

void resolve_warp(int first, int count);
void resolve_group(int first, int count);

/** Sets up the running block's fibers (their stacks from s.stacks, more mapped where it has too few). */
inline void start_block(int threads) {
  State& s = state();
  s.fibers.assign(size_t(threads), Fiber{});
  const int groups = (threads + 127) / 128;
  s.wg_open.clear();
  s.wg_open.resize(size_t(groups));
  s.wg_groups.clear();
  s.wg_groups.resize(size_t(groups));
  s.wg_fenced.assign(size_t(groups), false);
  while (s.stacks.size() < size_t(threads)) {
    const size_t page = page_bytes();
    char* base = static_cast<char*>(mmap(nullptr, kFiberStack + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (base == MAP_FAILED) fail("out of memory for fiber stacks");
    mprotect(base, page, PROT_NONE);  // a stack overflow faults instead of corrupting the next stack
    s.stacks.push_back(base + page);
    s.owned.push_back(base + page);
  }
  for (int i = 0; i < threads; ++i) {
    Fiber& f = s.fibers[size_t(i)];
    f.linear = i;
    f.tid = make_uint3(unsigned(i) % blockDim.x, (unsigned(i) / blockDim.x) % blockDim.y, unsigned(i) / (blockDim.x * blockDim.y));
#if defined(__x86_64__)
    // A new stack as switch_stack leaves one: six zero registers, then fiber_entry as the return
    // address, above it a zero "return address" of fiber_entry's own frame (16-byte ABI alignment).
    void** top = reinterpret_cast<void**>(s.stacks[size_t(i)] + kFiberStack);
    top[-1] = nullptr;
    top[-2] = reinterpret_cast<void*>(&fiber_entry);
    for (int r = 3; r <= 8; ++r) top[-r] = nullptr;
    f.sp = top - 8;
#else
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = s.stacks[size_t(i)];
    f.ctx.uc_stack.ss_size = kFiberStack;
    f.ctx.uc_link = &s.scheduler;
    makecontext(&f.ctx, fiber_entry, 0);
#endif
  }
}

/**
 * Runs the running block's fibers until every thread has exited (true) or every thread that has not
 * waits at a grid barrier or a cluster barrier (false: a cooperative launch resumes the block once the
 * whole grid is there, a cluster launch once its whole cluster is).
 */
inline bool resume_block(int threads) {
  State& s = state();
  std::vector<int> order(static_cast<size_t>(threads));
  for (int i = 0; i < threads; ++i) order[size_t(i)] = i;
  int alive = 0;
  for (const Fiber& f : s.fibers) alive += f.wait != Wait::done;
  auto run = [&](Fiber& f) {
    s.current = &f;
    threadIdx = f.tid;
    switch_to_fiber(f);
    s.current = nullptr;
    if (f.wait == Wait::none) f.wait = Wait::done;  // returned through uc_link
    if (f.wait == Wait::done) --alive;
  };
  // Completes warp w's collective once every live lane has arrived; false while some lane is elsewhere.
  auto resolve_if_ready = [&](int w) {
    bool all = true, any = false, exited = false;
    for (int i = w; i < std::min(threads, w + 32); ++i) {
      const Wait x = s.fibers[size_t(i)].wait;
      any = any || x == Wait::warp;
      exited = exited || x == Wait::done;
      all = all && (x == Wait::warp || x == Wait::done);
    }
    if (!any || !all) return false;
    if (exited) fail(std::string("a warp collective (") + op_name(s.fibers[size_t(w)].op) + ") with exited lanes in the warp");
    resolve_warp(w, std::min(32, threads - w));
    return true;
  };
  // Half the blocks run warp by warp, each as far as it goes before the next starts (a warp that
  // skips a barrier then reads what others have not written yet); the others run every thread one
  // step per round, in a random order.
  const bool run_ahead = s.rng() & 1;
  const int warps = (threads + 31) / 32;
  std::vector<int> warp_order(static_cast<size_t>(warps));
  for (int w = 0; w < warps; ++w) warp_order[size_t(w)] = w;
  while (alive > 0) {
    bool progress = false;
    if (run_ahead) {
      // One warp per round, chosen at random among those that can run: it goes on until it waits for
      // other warps, and may go round again before a slower warp has moved.
      std::shuffle(warp_order.begin(), warp_order.end(), s.rng);
      for (int w : warp_order) {
        bool runnable = false;
        for (int i = 32 * w; i < std::min(threads, 32 * w + 32) && !runnable; ++i) runnable = s.fibers[size_t(i)].wait == Wait::none;
        if (!runnable) continue;
        for (bool ran = true; ran;) {
          ran = false;
          for (int i = 32 * w; i < std::min(threads, 32 * w + 32); ++i)
            if (s.fibers[size_t(i)].wait == Wait::none) run(s.fibers[size_t(i)]), ran = progress = true;
          if (resolve_if_ready(32 * w)) ran = progress = true;
        }
        break;
      }
      for (int w = 0; w < threads; w += 32) progress = resolve_if_ready(w) || progress;
    } else {
      std::shuffle(order.begin(), order.end(), s.rng);  // warps meet in a different order each round
      for (int i : order)
        if (s.fibers[size_t(i)].wait == Wait::none) run(s.fibers[size_t(i)]), progress = true;
      for (int w = 0; w < threads; w += 32) progress = resolve_if_ready(w) || progress;
    }
    for (int g = 0; g < threads; g += 128) {
      bool all = true, any = false;
      for (int i = g; i < std::min(threads, g + 128); ++i) {
        const Wait x = s.fibers[size_t(i)].wait;
        any = any || x == Wait::group;
        all = all && x == Wait::group;
      }
      if (any && all) {
        resolve_group(g, std::min(128, threads - g));
        progress = true;
      }
    }
    // A block-wide wait completes once every thread that has not exited is waiting at it: __syncthreads,
    // and griddepcontrol.wait (a PDL launch after a kernel: until then none of the block's threads may
    // touch what the previous kernel did).
    const auto release_block = [&](Wait w) {
      bool all = true, any = false;
      for (const Fiber& f : s.fibers) {
        any = any || f.wait == w;
        all = all && (f.wait == w || f.wait == Wait::done);
      }
      if (!any || !all) return false;
      for (Fiber& f : s.fibers)
        if (f.wait == w) f.wait = Wait::none;
      return true;
    };
    if (release_block(Wait::block)) progress = true;
    if (release_block(Wait::pdl)) s.pre_wait = false, progress = true;
    if (!progress && alive > 0) {
      int bar = 0, warp = 0, group = 0, pdl = 0, grid = 0, clus = 0, done = 0;
      std::string ops;
      for (const Fiber& f : s.fibers) {
        bar += f.wait == Wait::block, warp += f.wait == Wait::warp, group += f.wait == Wait::group, pdl += f.wait == Wait::pdl, grid += f.wait == Wait::grid,
            clus += f.wait == Wait::cluster, done += f.wait == Wait::done;
        if ((f.wait == Wait::warp || f.wait == Wait::group) && ops.find(op_name(f.op)) == std::string::npos) ops += std::string(" ") + op_name(f.op);
      }
      // The whole block at a grid barrier (or a cluster barrier): the launch (cluster) goes on with its other blocks.
      if (grid == alive || clus == alive) return false;
      char buf[360];
      std::snprintf(buf, sizeof buf,
                    "deadlock: %d threads at __syncthreads, %d in warp collectives, %d in warpgroup collectives (%s ), %d at griddepcontrol.wait, %d at a grid "
                    "barrier, %d at a cluster barrier, %d exited",
                    bar, warp, group, ops.c_str(), pdl, grid, clus, done);
      fail(buf);
    }
  }
  return true;
}

inline void run_block(int threads) {
  start_block(threads);
  if (!resume_block(threads)) fail("a grid or cluster barrier in a kernel launched without one");  // grid_sync() and cluster_sync() fail first
}

/** The kernel's demangled name (the binary is linked with -rdynamic), else the launch's text. */
inline std::string kernel_name(const void* fn, const char* text) {
  Dl_info info;
  if (dladdr(fn, &info) != 0 && info.dli_sname != nullptr) {
    int status = 0;
    char* d = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
    if (status == 0 && d != nullptr) {
      std::string name(d);
      std::free(d);
      return name.size() > 240 ? name.substr(0, 240) + "..." : name;
    }
  }
  return text;
}

// ---- programmatic dependent launch: the PDL check ---------------------------------------------------
// A kernel launched with PDL after another may run on a GPU while that one still runs, until its
// griddepcontrol.wait: before it, it may only touch what the previous kernel neither writes nor
// reads (in practice: only read the weights, which no kernel writes). Kernels run one after another
// here, so a read before the wait would still see finished data: the emulator checks the rule
// instead. During a launch the body of every device allocation of the device is protected, and
// the first read and the first write of each fault into on_segv, which records them (kTouched,
// kWritten) and opens the allocation that far; a PDL launch after a kernel closes the allocations
// that kernel touched again before each block, and an access to one of them (a write, where the
// previous kernel only read it) before the block's griddepcontrol.wait fails the run. Granularity:
// whole allocations (model.cu has three: weights, KV cache, activations). Copies, memsets, an
// all-reduce and synchronizations end the dependency (a PDL launch after them waits in full).
// The block's threads all wait together (a block-wide point here, per thread on a GPU: a kernel
// whose threads wait at different points, some at a barrier first, reports a deadlock).
// x86-64 only (a fault's read/write bit); MC_EMU_PDL_CHECK=0 switches it off.

inline bool pdl_check_enabled() {
#if defined(__x86_64__)
  static const bool on = [] {
    const char* v = std::getenv("MC_EMU_PDL_CHECK");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  return on;
#else
  return false;
#endif
}

/** The launch whose accesses are tracked on this OS thread (read by the fault handler), else nullptr. */
inline thread_local State* tracking = nullptr;
inline struct sigaction& previous_segv_action() {
  static struct sigaction a;
  return a;
}

/**
 * A fault that is not the PDL check's: what was there before (a guard page's fault then ends the
 * process: the access runs again under the default action; a SIGSEGV sent by kill is raised again).
 */
inline void pass_on_segv(int sig, siginfo_t* info, void* context) {
  const struct sigaction& p = previous_segv_action();
  if ((p.sa_flags & SA_SIGINFO) != 0 && p.sa_sigaction != nullptr) return p.sa_sigaction(sig, info, context);
  if ((p.sa_flags & SA_SIGINFO) == 0 && p.sa_handler != SIG_DFL && p.sa_handler != SIG_IGN) return p.sa_handler(sig);
  sigaction(SIGSEGV, &p, nullptr);
  if (info->si_code <= 0) raise(sig);
}

inline void on_segv(int sig, siginfo_t* info, void* context) {
#if defined(__x86_64__)
  State* s = tracking;
  char* addr = static_cast<char*>(info->si_addr);
  if (info->si_code == SEGV_ACCERR) {
    char what[400] = "";
    bool handled = false;
    {
      std::lock_guard<std::mutex> lock(allocations_mutex());
      auto it = allocations().upper_bound(addr);
      if (it != allocations().begin()) {
        --it;
        Mapping& m = it->second;
        const size_t body = m.total - page_bytes();
        if (addr >= m.base && addr < m.base + body && m.prot != (PROT_READ | PROT_WRITE)) {
          const bool write = (static_cast<ucontext_t*>(context)->uc_mcontext.gregs[REG_ERR] & 2) != 0;
          if (s == nullptr || m.device != s->device) {
            std::snprintf(what, sizeof what,
                          "device memory of device %d touched by a host thread while another thread's launch on that device tracks it (the PDL check "
                          "follows one thread per device: run such models one at a time, or set MC_EMU_PDL_CHECK=0)", m.device);
          } else if (s->pre_wait && ((m.prev & kWritten) != 0 || (write && (m.prev & kTouched) != 0))) {
            std::snprintf(what, sizeof what,
                          "%s a device allocation (%zu bytes at %p) that the previous kernel (%s) %s, before griddepcontrol.wait: launched with "
                          "programmatic dependent launch, this kernel may run while that one still does (before the wait, only read what no kernel "
                          "writes: the weights)",
                          write ? "writes" : "reads", body - size_t(static_cast<char*>(it->first) - m.base), it->first, s->prev_kernel_name.c_str(),
                          (m.prev & kWritten) != 0 ? "wrote" : "read");
          } else {
            m.now |= uint8_t(kTouched | (write ? kWritten : 0));
            m.prot = write ? PROT_READ | PROT_WRITE : PROT_READ;
            if (mprotect(m.base, body, m.prot) != 0) std::snprintf(what, sizeof what, "mprotect failed while tracking device memory (%s)", std::strerror(errno));
            else handled = true;  // the access runs again, now allowed
          }
        }
      }
    }
    if (handled) return;
    if (what[0] != '\0') {
      tracking = nullptr;  // a fault while failing is not one to record
      fail(what);          // outside the lock: exit-time destructors may free device memory
    }
  }
#endif
  pass_on_segv(sig, info, context);
}

/** Sets `prot` on every allocation of `device` for which keep(mapping) holds, except the block's shared memory. */
template <class F>
inline void protect_where(int device, const void* smem, int prot, F keep) {
  std::lock_guard<std::mutex> lock(allocations_mutex());
  for (auto& [p, m] : allocations())
    if (m.device == device && p != smem && m.prot != prot && keep(m)) {
      m.prot = prot;
      mprotect(m.base, m.total - page_bytes(), prot);
    }
}

/** A launch begins: every allocation of the device closed, so that its first accesses are seen. */
inline void track_begin(State& s, const void* smem) {
  if (!pdl_check_enabled()) return;
  static std::once_flag installed;
  std::call_once(installed, [] {
    struct sigaction a = {};
    a.sa_sigaction = on_segv;
    a.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&a.sa_mask);
    sigaction(SIGSEGV, &a, &previous_segv_action());
  });
  {
    std::lock_guard<std::mutex> lock(allocations_mutex());
    for (auto& [p, m] : allocations())
      if (m.device == s.device && p != smem) m.now = 0;
  }
  protect_where(s.device, smem, PROT_NONE, [](const Mapping&) { return true; });
  tracking = &s;
}
/** A block of a PDL launch after a kernel begins: what that kernel touched is closed again. */
inline void track_block(State& s, const void* smem) {
  if (pdl_check_enabled()) protect_where(s.device, smem, PROT_NONE, [](const Mapping& m) { return m.prev != 0; });
}
/** The launch ended: everything open again, and what it touched is now the previous kernel's. */
inline void track_end(State& s, const void* smem) {
  s.prev_kernel = true;
  s.prev_kernel_name = s.kernel;
  if (!pdl_check_enabled()) return;
  tracking = nullptr;
  protect_where(s.device, smem, PROT_READ | PROT_WRITE, [](const Mapping&) { return true; });
  std::lock_guard<std::mutex> lock(allocations_mutex());
  for (auto& [p, m] : allocations())
    if (m.device == s.device && p != smem) m.prev = m.now;
}
/** A copy, memset, all-reduce or synchronization on this thread's device: a PDL launch after it waits in full. */
inline void not_a_kernel() { state().prev_kernel = false; }

/** griddepcontrol.wait: where the block's threads may start to touch what the previous kernel did. */
inline void pdl_wait() {
  State& s = state();
  if (s.current == nullptr) fail("griddepcontrol.wait outside a kernel");
  s.current->pdl_waited = true;
  if (s.pre_wait) yield(Wait::pdl);
}
/** griddepcontrol.launch_dependents: only after the wait, or the next kernel could run beside the one before this. */
inline void pdl_trigger() {
  State& s = state();
  if (s.current == nullptr) fail("griddepcontrol.launch_dependents outside a kernel");
  if (s.pdl && !s.current->pdl_waited)
    fail("griddepcontrol.launch_dependents before griddepcontrol.wait in a kernel launched with programmatic dependent launch: the next kernel "
         "could start while the one before this still runs (bench/RESULTS.md run 3: chains of early-resident kernels)");
}

/** Blocks of `threads` threads and `smem` bytes of dynamic shared memory that the emulated device holds at once (its occupancy rule). */
inline int resident_blocks(int threads, size_t smem) {
  int per_sm = std::min(32, 2048 / std::max(1, threads));
  if (smem > 0) per_sm = std::min(per_sm, int((228 * 1024) / (smem + 1024)));
  return per_sm * device().sms;
}

/** A grid barrier of a cooperative launch: every thread of every block of the grid arrives before any goes on. */
inline void grid_sync() {
  State& s = state();
  if (s.current == nullptr) fail("a grid barrier outside a kernel");
  if (!s.cooperative)
    fail("a grid barrier in a kernel not launched cooperatively (cudaLaunchAttributeCooperative): on a GPU its blocks need not be resident together, "
         "and the barrier may never open");
  yield(Wait::grid);
}

/** The running block's rank in its cluster (%cluster_ctarank): x fastest, as the hardware numbers them. */
inline unsigned cluster_rank() {
  const dim3 c = state().cluster;
  return blockIdx.x % c.x + c.x * (blockIdx.y % c.y + c.y * (blockIdx.z % c.z));
}

/**
 * barrier.cluster.arrive.release + barrier.cluster.wait.acquire: every thread of the cluster's blocks
 * that has not exited arrives before any goes on. Only in launches with a cluster shape (a GPU would
 * take a launch without one as clusters of one block; the kernels here always give one).
 */
inline void cluster_sync() {
  State& s = state();
  if (s.current == nullptr) fail("a cluster barrier outside a kernel");
  if (s.cluster_smem.empty()) fail("a cluster barrier in a kernel launched without a cluster shape (cudaLaunchAttributeClusterDimension)");
  yield(Wait::cluster);
}

/**
 * Distributed shared memory (mapa + ld.shared::cluster): the `bytes` at the same offset as `p` (in this
 * block's dynamic shared memory) in the shared memory of block `rank` of this cluster. That block must
 * not have exited: on a GPU its shared memory may then belong to another block already.
 */
inline const char* cluster_smem(const void* p, unsigned rank, size_t bytes) {
  State& s = state();
  const uint32_t addr = smem_address(p);
  smem_pointer(addr, bytes);  // inside this block's shared memory, so inside every block's of the launch
  const dim3 c = s.cluster;
  if (rank >= c.x * c.y * c.z) fail("a distributed shared-memory access to rank " + std::to_string(rank) + " of a cluster of " + std::to_string(c.x * c.y * c.z) + " blocks");
  if (s.cluster_smem.size() <= rank || s.cluster_smem[rank] == nullptr) fail("a distributed shared-memory access in a launch without a cluster shape");
  if (s.cluster_exited[rank])
    fail("a distributed shared-memory access to block " + std::to_string(rank) + " of the cluster after it exited (a cluster barrier before exit keeps every block's shared memory alive until all have read it)");
  return s.cluster_smem[rank] + (addr - kSmemBase);
}

/** One block of a cooperative launch between its turns: its fibers, their stacks, its warpgroups' wgmma state. */
struct SuspendedBlock {
  uint3 idx;
  bool started = false, done = false;
  std::vector<Fiber> fibers;
  std::vector<char*> stacks;
  std::vector<std::vector<std::unique_ptr<WgmmaOp>>> wg_open;
  std::vector<std::vector<std::vector<std::unique_ptr<WgmmaOp>>>> wg_groups;
  std::vector<bool> wg_fenced;
  void swap_with(State& s) {
    std::swap(fibers, s.fibers), std::swap(stacks, s.stacks), std::swap(wg_open, s.wg_open), std::swap(wg_groups, s.wg_groups), std::swap(wg_fenced, s.wg_fenced);
  }
};

/**
 * Bytes between the dynamic shared memories of blocks resident at once (slices of one region): a
 * GPU starts every block's at an aligned address, so each slice starts on 16 bytes (the widest
 * access, a float4 or uint4) whatever the size a launch asks for.
 */
inline size_t smem_slice(size_t smem) { return (smem + 15) / 16 * 16; }

/** Written at the bottom of each stack of a cooperative block: a fiber that ran past its stack changed it. */
constexpr uint64_t kStackCanary = 0x5ca1ab1e0ddba11ull;

/**
 * A cooperative launch, or one cluster of a cluster launch (`barrier` Wait::grid or Wait::cluster):
 * every block resident at once, as a GPU guarantees it (or refuses the launch). Blocks take turns,
 * each running until it exits or waits at the barrier in full; once every block waits there, all go
 * on (a block that exits while others wait would hang a GPU: a failure here). Each block has its own
 * dynamic shared memory (a slice of one region), which a cluster's blocks reach by rank
 * (cluster_smem); static __shared__ arrays are junk again at each turn, so a kernel must not keep
 * them across a barrier.
 */
inline void run_cooperative(const std::vector<uint3>& blocks, int threads, char* region, size_t smem, Wait barrier = Wait::grid) {
  State& s = state();
  std::vector<char*> pool;  // the thread's own fiber stacks, back in place at the end
  pool.swap(s.stacks);
  // A grid resident at once may hold tens of thousands of threads: a stack each with its own guard
  // page would pass the kernel's limit of mappings (vm.max_map_count), so each block's stacks are
  // one mapping, a guard page below it and a canary at the bottom of each stack.
  std::vector<std::pair<char*, size_t>> slabs;
  const auto stacks_of = [&](SuspendedBlock& blk) {
    const size_t page = page_bytes(), bytes = page + size_t(threads) * kFiberStack;
    char* base = static_cast<char*>(mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (base == MAP_FAILED)
      fail("out of memory for the fiber stacks of a cooperative launch of " + std::to_string(blocks.size() * size_t(threads)) +
           " threads (every block resident at once): emulate fewer multiprocessors (MC_EMU_SMS)");
    mprotect(base, page, PROT_NONE);
    slabs.emplace_back(base, bytes);
    for (int i = 0; i < threads; ++i) {
      char* stack = base + page + size_t(i) * kFiberStack;
      std::memcpy(stack, &kStackCanary, sizeof kStackCanary);
      blk.stacks.push_back(stack);
    }
  };
  const auto check_stacks = [&](const SuspendedBlock& blk) {
    for (char* stack : blk.stacks)
      if (std::memcmp(stack, &kStackCanary, sizeof kStackCanary) != 0) fail("a thread of a cooperative launch ran past the bottom of its fiber stack");
  };
  std::vector<SuspendedBlock> grid(blocks.size());
  for (size_t b = 0; b < blocks.size(); ++b) grid[b].idx = blocks[b];
  const bool cluster = barrier == Wait::cluster;
  if (cluster) {
    const dim3 c = s.cluster;
    s.cluster_smem.assign(size_t(c.x) * c.y * c.z, nullptr);
    s.cluster_exited.assign(s.cluster_smem.size(), false);
    for (size_t b = 0; b < blocks.size(); ++b) {
      blockIdx = blocks[b];
      s.cluster_smem[cluster_rank()] = region != nullptr ? region + b * smem_slice(smem) : nullptr;
    }
  }
  std::vector<size_t> order(blocks.size());
  for (size_t b = 0; b < order.size(); ++b) order[b] = b;
  for (size_t left = blocks.size(); left > 0;) {
    for (size_t b : order) {
      SuspendedBlock& blk = grid[b];
      if (blk.done) continue;
      blockIdx = blk.idx;
      s.smem = region != nullptr ? region + b * smem_slice(smem) : nullptr;
      ++s.blocks_run;  // static shared memory: junk at each turn
      if (!blk.started) stacks_of(blk);
      blk.swap_with(s);
      if (!blk.started) start_block(threads);
      else
        for (Fiber& f : s.fibers)
          if (f.wait == barrier) f.wait = Wait::none;  // the whole grid (cluster) reached the barrier
      blk.started = true;
      blk.done = resume_block(threads);
      if (cluster && blk.done) s.cluster_exited[cluster_rank()] = true;  // its shared memory is gone; it no longer holds a barrier
      blk.swap_with(s);
      check_stacks(blk);
      left -= blk.done;
    }
    // Every block either exits or waits at the barrier in one turn (all were released together). A
    // grid barrier (a counter the GPU code polls) would never open with a block gone; a cluster
    // barrier waits only for the threads that have not exited.
    if (!cluster && left > 0 && left != blocks.size()) fail("a block exited while other blocks wait at a grid barrier: on a GPU the grid would never finish");
    std::shuffle(order.begin(), order.end(), s.rng);  // blocks pass each barrier in a different order
  }
  for (const auto& [base, bytes] : slabs) munmap(base, bytes);
  s.stacks.swap(pool);
  s.cluster_smem.clear(), s.cluster_exited.clear();
}

/**
 * Whether a launch may have clusters of this shape: every grid dimension a multiple of the cluster's,
 * at most 8 blocks (portable), or 16 where the kernel allows non-portable sizes (an H100's limit).
 */
inline bool cluster_shape_ok(const void* kernel, dim3 grid, dim3 cluster) {
  const unsigned n = cluster.x * cluster.y * cluster.z;
  if (n == 0 || grid.x % cluster.x != 0 || grid.y % cluster.y != 0 || grid.z % cluster.z != 0) return false;
  std::lock_guard<std::mutex> lock(global().mu);
  const auto attr = global().non_portable_cluster.find(kernel);
  return n <= (attr != global().non_portable_cluster.end() && attr->second ? 16u : 8u);
}

/**
 * Runs body (a call of `kernel` with its arguments) over the grid, block after block (a cooperative
 * launch: all blocks at once; a launch with a cluster shape: cluster after cluster, the blocks of
 * each at once); returns the launch error (as cudaGetLastError would).
 */
inline cudaError_t launch_now(const void* kernel, const char* name, dim3 grid, dim3 block, size_t smem, std::function<void()> body, bool pdl,
                              bool cooperative, dim3 cluster) {
  State& s = state();
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0 || threads > 1024 || grid.y > 65535 || grid.z > 65535) return cudaErrorInvalidConfiguration;
  if (cooperative && uint64_t(grid.x) * grid.y * grid.z > uint64_t(resident_blocks(int(threads), smem))) return cudaErrorCooperativeLaunchTooLarge;
  if (cooperative && pdl) fail("a cooperative launch with programmatic dependent launch is not emulated");
  // cluster 0 x 0 x 0: no cluster shape (each block a cluster of its own, without cluster barriers here).
  const bool clustered = cluster.x != 0;
  if (clustered && (cooperative || pdl)) fail("a cluster launch that is also cooperative or has programmatic dependent launch is not emulated");
  if (clustered && !cluster_shape_ok(kernel, grid, cluster)) return cudaErrorInvalidClusterSize;
  if (!clustered) cluster = dim3(1, 1, 1);
  size_t limit = device().smem_default;
  {
    std::lock_guard<std::mutex> lock(global().mu);
    const auto attr = global().max_dynamic_smem.find(kernel);
    if (attr != global().max_dynamic_smem.end()) limit = size_t(attr->second);
  }
  if (smem > limit) {
    std::fprintf(stderr, "mc_emu: %s: %zu bytes of dynamic shared memory, over the kernel's limit of %zu (cudaFuncSetAttribute)\n",
                 kernel_name(kernel, name).c_str(), smem, limit);
    return cudaErrorInvalidValue;
  }
  ++s.launches;
  s.kernel = kernel_name(kernel, name);
  s.smem_bytes = smem;
  // The blocks' dynamic shared memory: one block's at a time, or a slice for each block resident at
  // once (a cooperative launch: the grid; a cluster launch: a cluster).
  const size_t region_blocks = cooperative ? size_t(grid.x) * grid.y * grid.z : size_t(cluster.x) * cluster.y * cluster.z;
  char* region = smem > 0 ? static_cast<char*>(device_alloc(smem_slice(smem) * region_blocks)) : nullptr;
  blockDim = block;
  gridDim = grid;
  s.body = std::move(body);
  s.pdl = pdl;
  s.cooperative = cooperative;
  s.cluster = cluster;
  const bool after_kernel = pdl && s.prev_kernel;  // may run beside the previous kernel until its wait
  track_begin(s, region);
  // Blocks in a random order (a GPU promises none): a block that reads what another block of the
  // same launch writes, without anything ordering the two, then sees it sometimes only.
  std::vector<uint3> blocks;
  blocks.reserve(size_t(grid.x) * grid.y * grid.z);
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) blocks.push_back(make_uint3(x, y, z));
  std::shuffle(blocks.begin(), blocks.end(), s.rng);
  if (cooperative) {
    run_cooperative(blocks, int(threads), region, smem);
  } else if (clustered) {
    // Clusters in a random order, the blocks of each in the order the shuffle left them.
    std::vector<std::vector<uint3>> clusters(blocks.size() / (size_t(cluster.x) * cluster.y * cluster.z));
    std::map<std::tuple<unsigned, unsigned, unsigned>, size_t> index;
    for (const uint3& b : blocks) {
      const auto key = std::make_tuple(b.x / cluster.x, b.y / cluster.y, b.z / cluster.z);
      const auto it = index.emplace(key, index.size()).first;
      clusters[it->second].push_back(b);
    }
    for (const auto& c : clusters) {
      if (region != nullptr) std::memset(region, 0xa5, smem_slice(smem) * region_blocks);  // junk, not the previous cluster's data
      run_cooperative(c, int(threads), region, smem, Wait::cluster);
    }
  } else {
    for (const uint3& b : blocks) {
      blockIdx = b;
      if (region != nullptr) std::memset(region, 0xa5, smem);  // junk, not the previous block's data
      s.smem = region;
      s.pre_wait = after_kernel;
      if (after_kernel) track_block(s, region);
      ++s.blocks_run;
      run_block(int(threads));
    }
  }
  track_end(s, region);
  s.pdl = s.pre_wait = s.cooperative = false;
  s.cluster = dim3(1, 1, 1);
  if (region != nullptr) device_free(region);
  s.smem = nullptr;
  s.body = nullptr;
  return cudaSuccess;
}

/**
 * launch() of kernel(args...): a launch while its stream is captured is recorded (the arguments by
 * value, as a CUDA graph keeps a kernel's parameters, and its PDL edge); else launch_now. Only this
 * part depends on the kernel's parameter types: one copy of the rest, not one per kernel (a build
 * compiled ~30 of them).
 */
template <typename... P>
cudaError_t launch(void (*kernel)(P...), const char* name, dim3 grid, dim3 block, size_t smem, std::tuple<P...> args, cudaStream_t stream = nullptr, bool pdl = false,
                   bool cooperative = false, dim3 cluster = dim3(0, 0, 0)) {
  State& s = state();
  if (s.capture != nullptr && stream == s.capture_stream) {
    s.capture->push_back([=]() { return launch(kernel, name, grid, block, smem, args, nullptr, pdl, cooperative, cluster); });
    return cudaSuccess;
  }
  if (s.capture != nullptr && stream == nullptr) return cudaErrorStreamCaptureImplicit;  // the legacy stream while this thread captures
  return launch_now(reinterpret_cast<const void*>(kernel), name, grid, block, smem, [&]() { std::apply(kernel, args); }, pdl, cooperative, cluster);
}

/** What `kernel<<<grid, block, smem, stream>>>(args)` becomes: chevron(kernel, "kernel", grid, block, smem, stream)(args). */
template <typename... P>
struct Chevron {
  void (*kernel)(P...);
  const char* name;
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
  template <typename... A>
  void operator()(A&&... a) const {
    const cudaError_t e = launch(kernel, name, grid, block, smem, std::tuple<P...>(std::forward<A>(a)...), stream);
    if (e != cudaSuccess) state().last_error = e;
  }
};
template <typename... P>
Chevron<P...> chevron(void (*kernel)(P...), const char* name, dim3 grid, dim3 block, size_t smem = 0, cudaStream_t stream = nullptr) {
  return Chevron<P...>{kernel, name, grid, block, smem, stream};
}

template <typename T>
T* dynamic_smem() {
  return reinterpret_cast<T*>(state().smem);
}

/**
 * A static `__shared__ T name[N];` (emulate.ts rewrites it to a reference to this): one array per
 * declaration and OS thread, junk at the start of every block as on a GPU (a plain static would
 * hold the previous block's values, which a read before the write would take for right ones).
 */
template <typename A, int ID>
A& static_smem() {
  alignas(16) static thread_local A storage;
  static thread_local uint64_t block = 0;
  State& s = state();
  if (block != s.blocks_run) {
    std::memset(static_cast<void*>(&storage), 0xa5, sizeof storage);
    block = s.blocks_run;
  }
  return storage;
}

// ---- collectives ------------------------------------------------------------------------------------
inline float bf16_bits(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float f16_bits(uint16_t b) {
  __half_raw r;
  r.x = b;
  return __half2float(__half(r));
}
inline double elem(uint32_t reg, int half, bool bf16) {
  const uint16_t b = uint16_t(half ? reg >> 16 : reg & 0xffffu);
  return bf16 ? bf16_bits(b) : f16_bits(b);
}

/** mma.sync.m16n8k16 of one warp, fragments as the PTX ISA lays them out (groupID = lane / 4, t = lane % 4). */
inline void resolve_mma(Fiber* lanes, bool bf16) {
  // Every element written below before it is read: no pattern to fill them with (-ftrivial-auto-var-init).
  [[gnu::uninitialized]] double A[16][16], B[16][8], C[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l >> 2, t = l & 3;
    const uint32_t* a = lanes[l].in;  // a0..a3, b0, b1, c0..c3
    for (int h = 0; h < 2; ++h) {
      A[g][2 * t + h] = elem(a[0], h, bf16);
      A[g + 8][2 * t + h] = elem(a[1], h, bf16);
      A[g][2 * t + 8 + h] = elem(a[2], h, bf16);
      A[g + 8][2 * t + 8 + h] = elem(a[3], h, bf16);
      B[2 * t + h][g] = elem(a[4], h, bf16);
      B[2 * t + 8 + h][g] = elem(a[5], h, bf16);
    }
    float c[4];
    std::memcpy(c, a + 6, sizeof c);
    C[g][2 * t] = c[0], C[g][2 * t + 1] = c[1], C[g + 8][2 * t] = c[2], C[g + 8][2 * t + 1] = c[3];
  }
  // C += A·B with k outermost: every output still sums C, then k = 0, 1, ..., 15 in order (the bits
  // of a dot product per output), but eight independent sums run at once instead of one chain of 16
  // dependent adds (this function was the emulator's largest cost, ~15% of a run).
  for (int r = 0; r < 16; ++r) {
    double d0 = C[r][0], d1 = C[r][1], d2 = C[r][2], d3 = C[r][3], d4 = C[r][4], d5 = C[r][5], d6 = C[r][6], d7 = C[r][7];
    for (int k = 0; k < 16; ++k) {
      const double a = A[r][k];
      const double* b = B[k];
      d0 += a * b[0], d1 += a * b[1], d2 += a * b[2], d3 += a * b[3], d4 += a * b[4], d5 += a * b[5], d6 += a * b[6], d7 += a * b[7];
    }
    C[r][0] = d0, C[r][1] = d1, C[r][2] = d2, C[r][3] = d3, C[r][4] = d4, C[r][5] = d5, C[r][6] = d6, C[r][7] = d7;
  }
  for (int l = 0; l < 32; ++l) {
    const int g = l >> 2, t = l & 3;
    const float f[4] = {float(C[g][2 * t]), float(C[g][2 * t + 1]), float(C[g + 8][2 * t]), float(C[g + 8][2 * t + 1])};
    std::memcpy(lanes[l].out, f, sizeof f);
  }
}

/** ldmatrix.sync.m8n8.x4.trans.b16: lanes 8i..8i+7 give the rows of matrix i; lane l gets M_i[2t][g], M_i[2t+1][g]. */
inline void resolve_ldmatrix_trans(Fiber* lanes) {
  uint16_t M[4][8][8];
  for (int l = 0; l < 32; ++l) {
    const char* row = smem_pointer(smem_address(lanes[l].addr), 16);
    if ((smem_address(lanes[l].addr) & 15u) != 0) fail("ldmatrix row address not 16-byte aligned");
    std::memcpy(M[l / 8][l % 8], row, 16);
  }
  for (int l = 0; l < 32; ++l) {
    const int g = l >> 2, t = l & 3;
    for (int i = 0; i < 4; ++i) lanes[l].out[i] = uint32_t(M[i][2 * t][g]) | (uint32_t(M[i][2 * t + 1][g]) << 16);
  }
}

inline void resolve_warp(int first, int count) {
  State& s = state();
  Fiber* lanes = &s.fibers[size_t(first)];
  const Op op = lanes[0].op;
  for (int l = 1; l < count; ++l)
    if (lanes[l].op != op) fail(std::string("lanes of one warp in different collectives (") + op_name(op) + ", " + op_name(lanes[l].op) + ")");
  if (count != 32) fail("a warp collective in a block whose size is not a multiple of 32");
  switch (op) {
    case Op::shfl:
      for (int l = 0; l < 32; ++l) lanes[l].out[0] = lanes[lanes[l].in[1] & 31].in[0];
      break;
    case Op::syncwarp: break;
    case Op::mma_bf16: resolve_mma(lanes, true); break;
    case Op::mma_f16: resolve_mma(lanes, false); break;
    case Op::ldmatrix_x4_trans: resolve_ldmatrix_trans(lanes); break;
    default: fail(std::string("not a warp collective: ") + op_name(op));
  }
  for (int l = 0; l < 32; ++l) lanes[l].wait = Wait::none, lanes[l].op = Op::none;
}

/**
 * Element (row, k) of a K-major, 128-byte-swizzled operand at the descriptor's start (PTX ISA, "Matrix
 * Descriptor"): rows of 128 bytes, 8-row groups `stride` bytes apart, and the 16-byte chunk index
 * (address bits 4-6) XORed with the row within 1024 bytes (bits 7-9) of the whole shared address.
 */
inline double wgmma_operand(uint64_t desc, int row, int k, bool bf16) {
  const uint32_t start = uint32_t(desc & 0x3FFFu) << 4;
  const uint32_t stride = uint32_t((desc >> 32) & 0x3FFFu) << 4;
  const uint32_t base_offset = uint32_t((desc >> 49) & 7u), mode = uint32_t(desc >> 62);
  if (mode != 1) fail("wgmma descriptor: only the 128-byte swizzle (layout type 1) is emulated");
  if (base_offset != 0) fail("wgmma descriptor: base offset must be 0 for tiles on 1024-byte boundaries");
  uint32_t addr = start + uint32_t(row / 8) * stride + uint32_t(row % 8) * 128u + uint32_t(k) * 2u;
  addr ^= ((addr >> 7) & 7u) << 4;
  uint16_t v;
  std::memcpy(&v, smem_pointer(addr, 2), 2);
  return bf16 ? bf16_bits(v) : f16_bits(v);
}

/** wgmma.mma_async m64n128k16, f32 accumulators: D[m][n] += Σ_k A[m][k] B[n][k], scattered as the ISA lays D out. */
/** Reads the operands of a wgmma into A and B (at issue). */
inline void read_wgmma_operands(uint64_t a, uint64_t b, bool bf16, double (&A)[64][16], double (&B)[128][16]) {
  for (int m = 0; m < 64; ++m)
    for (int k = 0; k < 16; ++k) A[m][k] = wgmma_operand(a, m, k, bf16);
  for (int n = 0; n < 128; ++n)
    for (int k = 0; k < 16; ++k) B[n][k] = wgmma_operand(b, n, k, bf16);
}

/** Retires one wgmma: its operands must still be what they were at issue (a copy landing late, or a buffer refilled early, is a race). */
inline void run_wgmma(const WgmmaOp& op) {
  static thread_local double now_a[64][16], now_b[128][16];
  read_wgmma_operands(op.a, op.b, op.bf16, now_a, now_b);
  if (std::memcmp(now_a, op.A, sizeof now_a) != 0 || std::memcmp(now_b, op.B, sizeof now_b) != 0)
    fail("the shared memory of a wgmma operand changed between wgmma.mma_async and the wait_group that retired it");
  // D[m][n] from the threads' accumulators, D += A·Bᵀ with k outermost (each output summed in k order,
  // as resolve_mma), and back to the threads as the ISA lays D out.
  static thread_local double D[64][128], Bt[16][128];
  for (int n = 0; n < 128; ++n)
    for (int k = 0; k < 16; ++k) Bt[k][n] = op.B[n][k];
  const auto at = [](int t, int i, int& m, int& n) {
    const int warp = t / 32, lane = t % 32;
    m = 16 * warp + lane / 4 + 8 * ((i / 2) % 2), n = 8 * (i / 4) + 2 * (lane % 4) + (i % 2);
  };
  int m, n;
  for (int t = 0; t < 128; ++t)
    for (int i = 0; i < 64; ++i) at(t, i, m, n), D[m][n] = op.d[t][i];
  for (int k = 0; k < 16; ++k)
    for (int r = 0; r < 64; ++r) {
      const double a = op.A[r][k];
      for (int c = 0; c < 128; ++c) D[r][c] += a * Bt[k][c];
    }
  for (int t = 0; t < 128; ++t)
    for (int i = 0; i < 64; ++i) at(t, i, m, n), op.d[t][i] = float(D[m][n]);
}

inline void resolve_group(int first, int count) {
  State& s = state();
  Fiber* th = &s.fibers[size_t(first)];
  const int wg = first / 128;
  const Op op = th[0].op;
  for (int i = 1; i < count; ++i)
    if (th[i].op != op || th[i].in[0] != th[0].in[0] || th[i].desc[0] != th[0].desc[0] || th[i].desc[1] != th[0].desc[1])
      fail(std::string("threads of one warpgroup in different wgmma instructions (") + op_name(op) + ", " + op_name(th[i].op) + ")");
  if (count != 128) fail("a wgmma instruction in a block whose size is not a multiple of 128");
  switch (op) {
    case Op::wg_fence: s.wg_fenced[size_t(wg)] = true; break;
    case Op::wg_mma_bf16:
    case Op::wg_mma_f16: {
      // Stricter than the ISA, which lets groups follow without a fence while nothing but wgmma of
      // one shape touches the accumulators: the kernels fence before every group.
      if (!s.wg_fenced[size_t(wg)]) fail("wgmma.mma_async without a wgmma.fence since the last commit");
      auto w = std::make_unique<WgmmaOp>();
      w->bf16 = op == Op::wg_mma_bf16, w->a = th[0].desc[0], w->b = th[0].desc[1];
      for (int t = 0; t < 128; ++t) w->d[t] = th[t].acc;
      read_wgmma_operands(w->a, w->b, w->bf16, w->A, w->B);
      s.wg_open[size_t(wg)].push_back(std::move(w));
      break;
    }
    case Op::wg_commit:
      s.wg_groups[size_t(wg)].push_back(std::move(s.wg_open[size_t(wg)]));
      s.wg_open[size_t(wg)].clear();
      s.wg_fenced[size_t(wg)] = false;
      break;
    case Op::wg_wait: {
      auto& groups = s.wg_groups[size_t(wg)];
      while (groups.size() > th[0].in[0]) {
        for (const auto& w : groups.front()) run_wgmma(*w);
        groups.erase(groups.begin());
      }
      break;
    }
    default: fail(std::string("not a warpgroup instruction: ") + op_name(op));
  }
  for (int i = 0; i < 128; ++i) th[i].wait = Wait::none, th[i].op = Op::none;
}

/** This fiber's part of a warp collective: sets op and inputs, waits for the warp, returns the fiber (outputs in out[]). */
inline Fiber& warp_collective(Op op) {
  Fiber* f = state().current;
  if (f == nullptr) fail(std::string(op_name(op)) + " outside a kernel");
  f->op = op;
  return *f;
}

}  // namespace mc_emu
