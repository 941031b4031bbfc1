// Decode (one token per item): gemv_kernel streams every weight row once with 16-byte loads into
// f32 dot products, its blocks resident and striding over the rows; as its warps finish they
// prefetch the next GEMV's weights into L2 (L2Next). Part of mc_cuda.cuh (include that).
#pragma once
#include "mc_device.cuh"

namespace mc {

// ---- where a GEMV's x comes from: at(i) gives x[i .. i + 4) --------------------------------------
/** x copied into shared memory by the block (the Op's load_x; a decode chain's GEMVs, the MoE experts). */
struct XShared {
  const float* p;
  __device__ __forceinline__ float4 at(int i) const { return *reinterpret_cast<const float4*>(p + i); }
};
/**
 * x read where it lies, in the stream beside the weights (through L1: the block's warps read the
 * same row), unless MC_CUDA_X=shared. No prologue: a block that first copies all of x into shared
 * memory leaves the memory pipe idle at every GEMV boundary (bench/RESULTS.md run 17, experiment B;
 * run 20: for GEMVs with an RMSNorm in front, normalizing in the stream cost more than it saved).
 */
struct XRow {
  const float* __restrict__ p;
  __device__ __forceinline__ float4 at(int i) const { return load4(p + i); }
};

/**
 * A warp's stream over ROWS weight rows: each lane holds the next U 16-byte chunks of every row in
 * registers (ROWS * U loads in flight), issues the following U while it multiplies these, and
 * accumulates x · row in f32, x from an X (XShared, XRow). Chunks are coalesced across the warp.
 */
template <int K, typename W, int ROWS, int U = 4>
struct RowStream {
  static constexpr int VEC = kVec<W>;
  static_assert(K % VEC == 0, "a weight row is read in 16-byte chunks: K must be a multiple of 16 / sizeof(W)");
  static constexpr int CHUNKS = K / VEC, STEP = 32 * U;
  static constexpr bool EXACT = CHUNKS % STEP == 0;
  uint4 w[U][ROWS];

  /** Loads the U chunks at c0, c0 + 32, ... of every row. */
  __device__ __forceinline__ void load(const W* (&rows)[ROWS], int c0) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + 32 * u;
#pragma unroll
      for (int r = 0; r < ROWS; ++r) w[u][r] = (EXACT || c < CHUNKS) ? load_stream(rows[r] + int64_t(c) * VEC) : make_uint4(0, 0, 0, 0);
    }
  }

  /**
   * acc[r] += x · row_r over the whole row; the first U chunks (at c0 = lane) must have been load()ed.
   * trigger: once the row's last loads are in flight, let the next kernel launch (let_next_kernel_launch).
   */
  template <class X>
  __device__ __forceinline__ void run(const X& x, const W* (&rows)[ROWS], int lane, float (&acc)[ROWS], bool trigger = false) {
#pragma unroll 1
    for (int c0 = lane; c0 < CHUNKS; c0 += STEP) {
      uint4 cur[U][ROWS];
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int r = 0; r < ROWS; ++r) cur[u][r] = w[u][r];
      if (c0 + STEP < CHUNKS) load(rows, c0 + STEP);  // the next U chunks fly while these are used
      else if (trigger) let_next_kernel_launch();    // nothing more to load: the last round trip is in flight
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int c = c0 + 32 * u;
        if (EXACT || c < CHUNKS) {
          float xv[VEC];
#pragma unroll
          for (int i = 0; i < VEC; i += 4) *reinterpret_cast<float4*>(xv + i) = x.at(c * VEC + i);
#pragma unroll
          for (int r = 0; r < ROWS; ++r) {
            float wv[VEC];
            unpack<W>(cur[u][r], wv);
#pragma unroll
            for (int i = 0; i < VEC; ++i) acc[r] = fmaf(xv[i], wv[i], acc[r]);
          }
        }
      }
    }
  }
};

/**
 * The first `bytes` of the weights that the next weight-streaming decode kernel reads, for this
 * GEMV's warps to prefetch into L2 as they finish. Between two GEMVs the memory pipe idles while
 * the last warps of one drain and the next launches and waits for its first loads (~5 µs a kernel
 * on the 7B: bench/RESULTS.md runs 1-4); bytes fetched then are bytes the next one finds in L2.
 * Warps that are done take consecutive shares, so the prefetch runs in this kernel's tail only.
 * Decode only: a prefill GEMM's tail is a small part of its time. Run 9 there has the prediction.
 */
struct L2Next {
  const char* p = nullptr;
  int64_t bytes = 0;  // a multiple of 16, p 16-byte aligned (l2_next); 0: nothing to prefetch

  /** Warp w of `warps` hints its share: 128-byte multiples, in warp order, the last one shorter. */
  __device__ __forceinline__ void prefetch_share(int64_t w, int64_t warps, int lane) const {
    if (bytes <= 0) return;
    const int64_t share = (bytes + warps * 128 - 1) / (warps * 128) * 128, first = w * share;
    if (first < bytes) prefetch_l2_warp(p + first, uint32_t(bytes - first < share ? bytes - first : share), lane);
  }
};
/** Where the next GEMV starts: right after this one, or after the attention (a longer idle span). */
enum class NextIs { adjacent, after_attention };
/** The next GEMV's weights (count elements at p), as much of them as device_info() says to prefetch. */
template <typename T>
inline L2Next l2_next(const T* p, int64_t count, NextIs where = NextIs::adjacent) {
  L2Next next;
  if (p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 != 0) return next;
  const DeviceInfo& info = device_info();
  next.p = reinterpret_cast<const char*>(p);
  next.bytes = std::min<int64_t>(count * int64_t(sizeof(T)), where == NextIs::after_attention ? info.l2_prefetch_attention_bytes : info.l2_prefetch_bytes) / 16 * 16;
  return next;
}

/** Whether the Op's decode GEMV reads x in the stream (it has x_in), not from a shared-memory copy. */
template <class Op, class = void> struct XInStream { static constexpr bool value = false; };
template <class Op> struct XInStream<Op, decltype(void(&Op::x_in))> { static constexpr bool value = true; };
template <class Op> constexpr bool kXInStream = XInStream<Op>::value;


/**
 * One warp's row group of a decode GEMV: acc = Σ over sources of scale · (x_src · rows), x_src =
 * x_of(src) (an X), reduced across the warp, then the Op's epilogue on lane 0. `loaded`: source 0's rows (ptr, scale) are in
 * the stream already (a warp's first group: issued before the x prologue, and with EARLY_ROWS before the wait). `trigger`: let the next
 * kernel launch once the last loads are in flight. gemv_kernel's loop body; also what a persistent
 * kernel over several GEMVs runs per group (bench/gpu/boundaries.cu).
 */
template <class Op, class XOf>
__device__ __forceinline__ void gemv_group(const Op& op, int item, int group, const XOf& x_of, RowStream<Op::K, typename Op::W, Op::ROWS>& stream,
                                           const typename Op::W* (&ptr)[Op::ROWS], float& scale, bool loaded, bool trigger, int lane) {
  float acc[Op::ROWS] = {};
#pragma unroll 1
  for (int src = 0; src < Op::NSRC; ++src) {
    if (!loaded) {
      op.rows(item, group, src, ptr, scale);
      stream.load(ptr, lane);
    }
    loaded = false;
    float part[Op::ROWS] = {};
    stream.run(x_of(src), ptr, lane, part, trigger && src == Op::NSRC - 1);
#pragma unroll
    for (int r = 0; r < Op::ROWS; ++r) acc[r] = fmaf(scale, part[r], acc[r]);
  }
#pragma unroll
  for (int r = 0; r < Op::ROWS; ++r) acc[r] = warp_sum(acc[r]);
  if (lane == 0) op.epilogue(item, group, acc);
}

/**
 * Decode GEMV: blocks stay resident and stride over the row groups (one x prologue per block). The
 * Op (a struct in a kernel template) says:
 *   W, K, ROWS (rows per warp), NSRC (x vectors per item), WARPS, GROUPS (row groups in all);
 *   EARLY_ROWS: the rows of source 0 do not depend on earlier kernels (no routing), so a warp starts
 *               streaming them before it waits for the previous kernel (otherwise right after the
 *               wait, before the block loads x);
 *   bool load_x(item, xs)            fill xs[NSRC][K] (all threads; false: skip this item; a warp's
 *                                    first rows() are loaded before it, so rows() must be safe for
 *                                    an item it skips)
 *   X x_in(item, lane)               optional (one source, every item live, no transform): x read in
 *                                    the stream (XRow) unless MC_CUDA_X=shared, no shared memory;
 *                                    load_x still serves the other setting and the decode chains
 *   void rows(item, group, src, ptr[ROWS], scale)  the weight rows of a group and the source's scale
 *   void epilogue(item, group, acc[ROWS])          lane 0 of the warp; acc = sum over sources
 * early_trigger (MC_CUDA_PDL_TRIGGER=last-rows): the next kernel may launch once every block is
 * issuing no more loads (a warp of it is on its last group's final chunks), rather than when the
 * blocks exit.
 */
template <class Op, bool X_STREAM = false>
__global__ void __launch_bounds__(Op::WARPS * 32) gemv_kernel(const Op op, const L2Next next, const bool early_trigger) {
  using W = typename Op::W;
  extern __shared__ float4 gemv_smem[];
  float* xs = reinterpret_cast<float*>(gemv_smem);
  const int item = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int group = blockIdx.x * Op::WARPS + warp;
  RowStream<Op::K, W, Op::ROWS> stream;
  const W* ptr[Op::ROWS];
  float scale = 1.f;
  bool loaded = false;
  // A warp's first rows stream while the block waits and loads x: before the wait where they are
  // weights only (EARLY_ROWS), else right after it (rows the routing chose), ahead of the x prologue.
  auto load_first_rows = [&] {
    if (group < Op::GROUPS) {
      op.rows(item, group, 0, ptr, scale);
      stream.load(ptr, lane);
      loaded = true;
    }
  };
  if constexpr (Op::EARLY_ROWS) load_first_rows();
  wait_for_previous_kernel();
  // MC_CUDA_PDL_TRIGGER=last-rows: the next kernel may launch once every block has a warp whose last
  // loads are in flight (its last group's final chunks; the first warp of a block to get there
  // counts for the block), so that its blocks take the SM slots these leave and start streaming.
  auto groups = [&](const auto& x_of) {
#pragma unroll 1
    for (; group < Op::GROUPS; group += gridDim.x * Op::WARPS) {
      const bool last = early_trigger && group + gridDim.x * Op::WARPS >= Op::GROUPS;
      gemv_group(op, item, group, x_of, stream, ptr, scale, loaded, last, lane);
      loaded = false;
    }
  };
  if constexpr (!Op::EARLY_ROWS) load_first_rows();
  if constexpr (X_STREAM) {  // an Op with x_in, unless MC_CUDA_X=shared
    static_assert(kXInStream<Op> && Op::NSRC == 1, "x read in the stream: an Op with x_in, one source");
    const auto x = op.x_in(item, lane);
    groups([&](int) { return x; });
  } else {
    if (!op.load_x(item, xs)) group = Op::GROUPS;  // nothing to do for this item (uniform in the block)
    __syncthreads();
    groups([&](int src) { return XShared{xs + src * Op::K}; });
  }
  if (early_trigger) let_next_kernel_launch();  // a warp with no rows at all (a block's first call counts; later ones do nothing)
  next.prefetch_share((int64_t(blockIdx.y) * gridDim.x + blockIdx.x) * Op::WARPS + warp, int64_t(gridDim.x) * gridDim.y * Op::WARPS, lane);
}

template <class Op> constexpr size_t gemv_smem_bytes() {
  static_assert(size_t(Op::NSRC) * Op::K * sizeof(float) + kBlockSumSmemBytes <= kMaxSmemBytes, "a GEMV's input rows exceed a block's shared memory: compiler/plan/cuda-limits.ts should have refused this model");
  return size_t(Op::NSRC) * Op::K * sizeof(float);
}


/** Blocks of this GEMV that fit on the device at once (0 until gemv_prepare ran: then one block per 8 groups). */
template <class Op>
inline int& gemv_resident_blocks() {
  static int blocks = 0;
  return blocks;
}

/** Raises the kernel's dynamic shared-memory limit when x needs more than 48 KB, and sizes its grid. */
template <class Op>
inline cudaError_t gemv_prepare() {
  if (device_info().sms == 0)
    if (cudaError_t e = init_device_info()) return e;
  if (cudaError_t e = cudaFuncSetAttribute(gemv_kernel<Op>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(gemv_smem_bytes<Op>()))) return e;
  // The x-in-the-stream kernel (no shared memory) runs the grid sized here, so that both settings run the same one.
  int per_sm = 0;
  if (cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, gemv_kernel<Op>, Op::WARPS * 32, gemv_smem_bytes<Op>())) return e;
  gemv_resident_blocks<Op>() = per_sm * device_info().sms;
  return cudaSuccess;
}

/** Launches the GEMV of `items` tokens (or routed rows); its warps prefetch `next` as they finish. */
template <class Op>
inline cudaError_t gemv(const Op& op, int items, cudaStream_t s, L2Next next = {}) {
  const int needed = (Op::GROUPS + Op::WARPS - 1) / Op::WARPS;
  const int resident = gemv_resident_blocks<Op>() / (items > 0 ? items : 1);
  const dim3 grid(resident > 0 && resident < needed ? resident : needed, items);
  if constexpr (kXInStream<Op>) {
    if (device_info().x_stream) return launch(gemv_kernel<Op, true>, grid, dim3(Op::WARPS * 32), 0, s, op, next, device_info().pdl_early_trigger);
  }
  return launch(gemv_kernel<Op>, grid, dim3(Op::WARPS * 32), gemv_smem_bytes<Op>(), s, op, next, device_info().pdl_early_trigger);
}

// ---- decode GEMVs chained in one cooperative kernel (MC_CUDA_DECODE=chain or layer) ---------------
// Between two decode GEMV kernels the 7B loses a few µs each (bench/RESULTS.md runs 9, 13, 14): the
// launch, the drain of the one before, the next one's first loads. A chain runs several GEMVs in one
// kernel whose blocks are all resident (a cooperative launch), a grid barrier between two, and each
// warp issues its first loads of the next GEMV before it arrives at the barrier. Each row group is
// computed by gemv_group, as gemv_kernel does, so the results are the same bits. Ops of one token
// (item 0), two rows a warp, eight warps a block, one source (the dense model's decode GEMVs).
// A link may also be a phase (an Op with PHASE = true and run(smem), e.g. the decode attention of
// mc_attention.cuh: MC_CUDA_DECODE=layer): every block calls it between two grid barriers, and the
// first loads of the GEMV after it are issued before it, held in registers while it runs.

/** Whether a chain link is a phase (PHASE = true) rather than a GEMV Op. */
template <class Op, class = void> struct ChainPhase { static constexpr bool value = false; };
template <class Op> struct ChainPhase<Op, decltype(void(Op::PHASE))> { static constexpr bool value = Op::PHASE; };
template <class Op> constexpr bool kChainPhase = ChainPhase<Op>::value;

/** The first GEMV Op among a chain's links (its weight type is the chain's). */
template <class... Ops> struct FirstGemv;
template <class Op, class... Rest> struct FirstGemv<Op, Rest...> {
  using type = std::conditional_t<kChainPhase<Op>, typename FirstGemv<Rest...>::type, Op>;
};
template <> struct FirstGemv<> { using type = void; };

/** A warp's first loads of the next GEMV of a chain, held across the barrier in front of it. */
template <typename W>
struct ChainEarly {
  uint4 w[4][2];  // a RowStream<K, W, 2>'s chunks (the same layout for every K): one set of registers for every GEMV
  const W* ptr[2];
  float scale;
  bool loaded;
};

/** Issues a warp's loads of its first group of `op` (before the barrier in front of op). */
template <class Op>
__device__ __forceinline__ void chain_first_loads(const Op& op, ChainEarly<typename Op::W>& early, int warp, int lane) {
  static_assert(Op::ROWS == 2 && Op::NSRC == 1 && Op::WARPS == 8, "a chain's GEMVs stream two rows a warp, eight warps a block, one source");
  early.loaded = warp < Op::GROUPS;
  if (!early.loaded) return;
  early.scale = 1.f;
  op.rows(0, warp, 0, early.ptr, early.scale);
  RowStream<Op::K, typename Op::W, 2> stream;
  stream.load(early.ptr, lane);
#pragma unroll
  for (int u = 0; u < 4; ++u)
#pragma unroll
    for (int r = 0; r < 2; ++r) early.w[u][r] = stream.w[u][r];
}

/**
 * One GEMV of a chain: its x prologue, then warp `warp`'s groups, the first from `early`; after it
 * every `warps`-th, or with a `ticket` (a counter of this GEMV, zeroed) the next one no warp has
 * taken, asked for as the warp starts the one before (bench/gpu/boundaries.cu times both).
 */
template <class Op>
__device__ __forceinline__ void chain_gemv(const Op& op, float* xs, const ChainEarly<typename Op::W>& early, int warp, int warps, int lane, unsigned* ticket = nullptr) {
  const bool any = op.load_x(0, xs);
  __syncthreads();
  RowStream<Op::K, typename Op::W, 2> stream;
  const typename Op::W* ptr[2] = {early.ptr[0], early.ptr[1]};
  float scale = early.scale;
  bool loaded = early.loaded;
  if (loaded) {
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
      for (int r = 0; r < 2; ++r) stream.w[u][r] = early.w[u][r];
  }
#pragma unroll 1
  for (int group = warp; any && group < Op::GROUPS;) {
    unsigned taken = 0;
    if (ticket != nullptr && lane == 0) taken = atomicAdd(ticket, 1u);  // its latency hidden by this group's stream
    gemv_group(op, 0, group, [&](int) { return XShared{xs}; }, stream, ptr, scale, loaded, false, lane);
    loaded = false;
    group = ticket != nullptr ? warps + int(__shfl_sync(0xffffffffu, taken, 0)) : group + warps;
  }
  __syncthreads();  // xs is the next GEMV's
}

/** The links of a chain, in order (kernel parameters). */
template <class... Ops> struct GemvChain;
template <class Op> struct GemvChain<Op> { Op op; };
template <class Op, class Next, class... Rest> struct GemvChain<Op, Next, Rest...> {
  Op op;
  GemvChain<Next, Rest...> rest;
};
template <class Op> GemvChain<Op> make_chain(const Op& op) { return {op}; }
template <class Op, class Next, class... Rest>
GemvChain<Op, Next, Rest...> make_chain(const Op& op, const Next& next, const Rest&... rest) { return {op, make_chain(next, rest...)}; }

/** Issues a warp's first loads of the first GEMV among the links (none if they are all phases). */
template <class Op, class... Rest, typename W>
__device__ __forceinline__ void chain_next_loads(const GemvChain<Op, Rest...>& chain, ChainEarly<W>& early, int warp, int lane) {
  if constexpr (!kChainPhase<Op>) chain_first_loads(chain.op, early, warp, lane);
  else if constexpr (sizeof...(Rest) > 0) chain_next_loads(chain.rest, early, warp, lane);
}

template <class Op, class... Rest, typename W>
__device__ __forceinline__ void run_chain(const GemvChain<Op, Rest...>& chain, float4* smem, ChainEarly<W>& early, int warp, int warps, int lane, unsigned* arrivals) {
  if constexpr (kChainPhase<Op>) {
    chain.op.run(smem);  // the next GEMV's first loads, if any, stay in flight meanwhile
  } else {
    chain_gemv(chain.op, reinterpret_cast<float*>(smem), early, warp, warps, lane);
    if constexpr (sizeof...(Rest) > 0) chain_next_loads(chain.rest, early, warp, lane);
  }
  if constexpr (sizeof...(Rest) > 0) {
    grid_barrier(arrivals);  // what this link wrote (the residual, the hidden state, the attention's partials) is read by the next one
    run_chain(chain.rest, smem, early, warp, warps, lane, arrivals);
  }
}

/** Shared memory of a link: a GEMV's x, or what a phase says. */
template <class Op>
constexpr size_t chain_link_smem_bytes() {
  if constexpr (kChainPhase<Op>) return Op::smem_bytes();
  else return gemv_smem_bytes<Op>();
}
template <class... Ops>
constexpr size_t chain_smem_bytes() {
  size_t bytes = 0;
  for (size_t b : {chain_link_smem_bytes<Ops>()...}) bytes = b > bytes ? b : bytes;
  return bytes;
}
/** Blocks a link can keep busy: a GEMV's groups over 8 warps, a phase's items. */
template <class Op>
constexpr int chain_link_blocks() {
  if constexpr (kChainPhase<Op>) return Op::ITEMS;
  else return (Op::GROUPS + 7) / 8;
}

/** The chain's links in one launch; `arrivals`: the grid barrier's counter (zeroed once, see grid_barrier). */
template <class First, class... Ops>
__global__ void __launch_bounds__(256, 2) gemv_chain_kernel(const GemvChain<First, Ops...> chain, unsigned* arrivals) {
  using Gemv = typename FirstGemv<First, Ops...>::type;
  static_assert(!std::is_void_v<Gemv>, "a chain holds at least one GEMV");
  extern __shared__ float4 gemv_smem[];
  const int lane = threadIdx.x & 31, warp = blockIdx.x * 8 + (threadIdx.x >> 5), warps = gridDim.x * 8;
  ChainEarly<typename Gemv::W> early;
  chain_next_loads(chain, early, warp, lane);  // weights only: in flight through any phases before the first GEMV
  wait_for_previous_kernel();                  // a no-op: a cooperative launch has no PDL, the kernel ahead is done
  run_chain(chain, gemv_smem, early, warp, warps, lane, arrivals);
}

/** Blocks of the chain kernel that fit on the device at once: its grid (0 until gemv_chain_prepare ran). */
template <class... Ops>
inline int& gemv_chain_blocks() {
  static int blocks = 0;
  return blocks;
}

template <class... Ops>
inline cudaError_t gemv_chain_prepare() {
  if (device_info().sms == 0)
    if (cudaError_t e = init_device_info()) return e;
  if (cudaError_t e = cudaFuncSetAttribute(gemv_chain_kernel<Ops...>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(chain_smem_bytes<Ops...>()))) return e;
  int per_sm = 0;
  if (cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, gemv_chain_kernel<Ops...>, 256, chain_smem_bytes<Ops...>())) return e;
  // Every block resident, two an SM at most (the decode GEMVs' grid on the GPUs this runs on: 8 warps
  // of ~90 registers, 2 blocks an SM), and none without work in the widest link.
  int needed = 0;
  for (int blocks : {chain_link_blocks<Ops>()...}) needed = std::max(needed, blocks);
  gemv_chain_blocks<Ops...>() = std::min(std::min(per_sm, 2) * device_info().sms, needed);
  return per_sm > 0 ? cudaSuccess : cudaErrorInvalidConfiguration;
}

/** Launches the chain of one token's GEMVs and phases (cooperative: every block resident, or the launch fails). */
template <class... Ops>
inline cudaError_t gemv_chain(unsigned* arrivals, cudaStream_t s, const Ops&... ops) {
  cudaLaunchAttribute attr[1] = {};
  attr[0].id = cudaLaunchAttributeCooperative;
  attr[0].val.cooperative = 1;
  const cudaLaunchConfig_t config = launch_config(dim3(unsigned(gemv_chain_blocks<Ops...>())), dim3(256), chain_smem_bytes<Ops...>(), s, attr, 1);
  return cudaLaunchKernelEx(&config, gemv_chain_kernel<Ops...>, make_chain(ops...), arrivals);
}

/** ptr[r] = row (first + r) of a [n, K] matrix; rows past the end point at row 0 (read, never stored). */
template <int K, int ROWS, typename W>
__device__ __forceinline__ void consecutive_rows(const W* base, int first, int n, const W* (&ptr)[ROWS]) {
#pragma unroll
  for (int r = 0; r < ROWS; ++r) ptr[r] = base + int64_t(first + r < n ? first + r : 0) * K;
}

}  // namespace mc
