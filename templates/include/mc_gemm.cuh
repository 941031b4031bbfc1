// Prefill (T > 1, bf16/f16 weights): gemm_kernel on mma.sync tensor cores (sm_80 and sm_90a) and
// gemm() choosing its tile, split-K, A narrowed once, and the sm_90a wgmma engine
// (mc_gemm_wgmma.cuh). Part of mc_cuda.cuh (include that).
#pragma once
#include "mc_device.cuh"

namespace mc {

/**
 * The weight row behind row r of the BN-row B tile of column block blockIdx.x, or nullptr past the
 * end (N columns, or units when PAIRED). PAIRED interleaves the two matrices every 8 rows, so one
 * thread's accumulators hold w1·x and w3·x of the same unit. Shared by both GEMM engines.
 */
template <class Op, int BN>
__device__ __forceinline__ const typename Op::W* gemm_b_row(const Op& op, int item, int r, int N) {
  if constexpr (Op::PAIRED) {
    const int frag = r / 8, unit = blockIdx.x * (BN / 2) + (frag / 2) * 8 + r % 8;
    return unit < N ? op.b_row(item, frag % 2, unit) : nullptr;
  } else {
    const int n = blockIdx.x * BN + r;
    return n < N ? op.b_row(item, 0, n) : nullptr;
  }
}

/**
 * Whether an Op's store is a linear accumulation that may also be made atomically (it has
 * store_add): then partial sums over ranges of K may be added by different blocks (split-K).
 */
template <class Op, class = void> constexpr bool kSplitK = false;
template <class Op> constexpr bool kSplitK<Op, std::void_t<decltype(&Op::store_add)>> = true;

/**
 * Where item `item`'s rows start in a narrowed A (A16): an Op over several items (experts) says so
 * with a16_first_row(item) (its rows must be consecutive there); one item starts at row 0.
 */
template <class Op, class = void> constexpr bool kGroupedA16 = false;
template <class Op> constexpr bool kGroupedA16<Op, std::void_t<decltype(&Op::a16_first_row)>> = true;
template <class Op>
__device__ __forceinline__ int a16_first_row(const Op& op, int item) {
  if constexpr (kGroupedA16<Op>) return op.a16_first_row(item);
  return 0;
}

/**
 * The A rows of a GEMM with RMSNorm fused in front: A[m, k] = x[m, k] * rstd[m] * norm[k]. An Op
 * holding one as `row_norm` (one item) leaves rstd to gemm(), which computes it where it costs
 * least: inside gemm_narrow_a_kernel when A is narrowed once (that kernel reads each row anyway),
 * else by a row_rstd launch before the GEMM, whose A loader then reads rstd[m].
 */
template <int K, typename W>
struct RowNorm {
  const float* x;   // [rows, K] f32
  const W* norm;    // [K]
  float eps;
  float* rstd;      // [rows] scratch, written by gemm() (only where A is read through the Op)
  __device__ __forceinline__ float4 a(int m, int k, float r) const { return mul4(scale4(load4(x + int64_t(m) * K + k), r), load4(norm + k)); }
  __device__ __forceinline__ float4 a(int m, int k) const { return a(m, k, rstd[m]); }
};
template <class Op, class = void> constexpr bool kRowNorm = false;
template <class Op> constexpr bool kRowNorm<Op, std::void_t<decltype(&Op::row_norm)>> = true;

/**
 * Tile shapes of the prefill GEMM: BM x BN outputs per block, WM x WN per warp (MF x NF mma tiles of
 * 16 x 8), K in steps of BK through STAGES shared-memory buffers. Rows are padded by 8 elements so
 * that the fragment loads of a warp hit 32 distinct banks.
 */
template <int BM_, int BN_, int WM_, int WN_, int MIN_BLOCKS_, int STAGES_ = 4>
struct GemmTile {
  static constexpr int BM = BM_, BN = BN_, WM = WM_, WN = WN_, BK = 32, STAGES = STAGES_, LDS = BK + 8;
  static constexpr int MIN_BLOCKS = MIN_BLOCKS_;  // blocks per SM the register budget is cut for (128 registers a thread)
  static constexpr int WARPS = (BM / WM) * (BN / WN), THREADS = 32 * WARPS, MF = WM / 16, NF = WN / 8;
  static constexpr int A_LOADS = BM * BK / 4 / THREADS;  // float4 of A per thread per stage
  static constexpr int B_LOADS = BN * BK / 8 / THREADS;  // 16-byte copies of B per thread per stage
  static constexpr int A16_LOADS = BM * BK / 8 / THREADS;  // 16-byte copies of A per thread per stage (A16)
  static_assert(A_LOADS * 4 * THREADS == BM * BK && B_LOADS * 8 * THREADS == BN * BK && A16_LOADS * 8 * THREADS == BM * BK, "whole loads per thread");
  static constexpr size_t smem_bytes() { return size_t(STAGES) * (BM + BN) * LDS * sizeof(uint16_t); }
};
/** Large problems (prefill of hundreds of tokens): 8 warps of 64 x 32, two blocks (160 KB of stages) per SM. */
using GemmLarge = GemmTile<128, 128, 64, 32, 2>;
/** Few tokens: the weights' bytes set the time, so more, smaller blocks keep every SM streaming. */
using GemmSmall = GemmTile<64, 64, 32, 32, 4>;
/**
 * The small tile 8 stages deep (80 KB, as the large tile): for a grid of fewer blocks than SMs that
 * cannot split K (its epilogue is not a sum: wq|wk|wv's RoPE and KV-cache write, w1|w3's SwiGLU),
 * e.g. the 7B's wq|wk|wv over ≤ 64 tokens, 96 blocks. There each block streams alone, and its
 * bandwidth is the bytes it keeps in flight over the memory latency: 7 stages of 5 KB instead of 3.
 */
using GemmDeep = GemmTile<64, 64, 32, 32, 2, 8>;

/**
 * C[m, n] = A[m, :] · B[n, :] on tensor cores (mma.sync m16n8k16, f32 accumulators). B (weights) is
 * copied by cp.async STAGES - 1 steps ahead; A (f32 activations, normalized or gathered by the Op)
 * for that same stage is loaded into registers at the start of a step (in flight while the step
 * computes), then narrowed to W and stored at its end. With f16 weights A is narrowed to f16: an
 * activation beyond ±65504 would become inf (bf16 has the f32 range).
 * The Op says:
 *   W (bf16 or f16), K, PAIRED;  int m_count(item);  int n_count()  (columns, or units when PAIRED)
 *   float4 a(item, m, k)         4 consecutive A values (m < m_count, k % 4 == 0)
 *   const W* b_row(item, which, n)   weight row n (which = 0, or 1 for the second matrix when PAIRED)
 *   store(item, m, n, v0, v1)          columns n, n + 1 (n even; n + 1 may be N: the Op guards it)
 *   store_pair(item, m, u, a0, a1, b0, b1)  PAIRED: units u, u + 1 of both matrices (SwiGLU)
 *   store_add(item, m, n, v0, v1)      optional: store as an atomic accumulation (residual +=), which
 *                                      lets gemm() split K across blocks when it has too few (below)
 * PAIRED interleaves the two matrices every 8 columns, so one thread holds w1·x and w3·x of a unit.
 * With `splits` > 1, blockIdx.z = item * splits + split: the block sums one of `splits` ranges of
 * K steps and adds its partial through store_add.
 * A16: A is not read through the Op; gemm_narrow_a_kernel has written it to `a16` once, narrowed
 * to W (row-major, K per row; an item's rows from a16_first_row), and its tiles are copied by
 * cp.async beside B's. (A template flag, not a runtime branch: with both paths the large tile needs
 * more than its 128 registers.)
 */
template <class Op, class Tile, bool A16>
__global__ void __launch_bounds__(Tile::THREADS, Tile::MIN_BLOCKS) gemm_kernel(const Op op, int splits, const uint16_t* __restrict__ a16) {
  using W = typename Op::W;
  constexpr int K = Op::K, BM = Tile::BM, BN = Tile::BN, BK = Tile::BK, LDS = Tile::LDS, S = Tile::STAGES;
  constexpr int MF = Tile::MF, NF = Tile::NF, THREADS = Tile::THREADS;
  constexpr int KT = (K + BK - 1) / BK;
  static_assert(K % 8 == 0, "weight rows are copied 8 elements (16 bytes) at a time");
  extern __shared__ float4 gemm_smem[];
  uint16_t* As = reinterpret_cast<uint16_t*>(gemm_smem);  // [S][BM][LDS]
  uint16_t* Bs = As + S * BM * LDS;                        // [S][BN][LDS]

  const int item = int(blockIdx.z) / splits, split = int(blockIdx.z) % splits;
  const int M = op.m_count(item);
  const int m0 = blockIdx.y * BM;
  if (m0 >= M) return;
  const int N = op.n_count();
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wm = warp % (BM / Tile::WM), wn = warp / (BM / Tile::WM), g = lane >> 2, t4 = lane & 3;
  // This block's K steps [kt0, kt1): all of them, or its split's share.
  const int per_split = (KT + splits - 1) / splits, kt0 = split * per_split, kt1 = min(KT, kt0 + per_split);

  // B rows this thread copies: tile row idx / 4, 16-byte chunk idx % 4 of each 32-wide k step.
  const W* brow[Tile::B_LOADS];
#pragma unroll
  for (int j = 0; j < Tile::B_LOADS; ++j) brow[j] = gemm_b_row<Op, BN>(op, item, (tid + THREADS * j) / 4, N);
  const W* const bdummy = op.b_row(item, 0, 0);
  auto load_b = [&](int buf, int k0) {
#pragma unroll
    for (int j = 0; j < Tile::B_LOADS; ++j) {
      const int idx = tid + THREADS * j, k = k0 + 8 * (idx % 4);
      const bool ok = brow[j] != nullptr && k < K;
      cp_async16(Bs + (buf * BN + idx / 4) * LDS + 8 * (idx % 4), ok ? brow[j] + k : bdummy, ok ? 16 : 0);
    }
  };
  // A16: tile row idx / 4, 16-byte chunk idx % 4 of each 32-wide k step (as for B).
  const uint16_t* const a16_item = A16 ? a16 + int64_t(a16_first_row(op, item)) * K : nullptr;
  auto load_a16 = [&](int buf, int k0) {
#pragma unroll
    for (int j = 0; j < Tile::A16_LOADS; ++j) {
      const int idx = tid + THREADS * j, m = m0 + idx / 4, k = k0 + 8 * (idx % 4);
      const bool ok = m < M && k < K;
      cp_async16(As + (buf * BM + idx / 4) * LDS + 8 * (idx % 4), ok ? a16_item + int64_t(m) * K + k : a16, ok ? 16 : 0);
    }
  };
  // A values this thread loads through the Op: row idx / 8, 4 floats at column 4 * (idx % 8).
  float4 areg[Tile::A_LOADS];
  auto load_a = [&](int k0) {
#pragma unroll
    for (int j = 0; j < Tile::A_LOADS; ++j) {
      const int idx = tid + THREADS * j, m = m0 + idx / 8, k = k0 + 4 * (idx % 8);
      areg[j] = m < M && k < K ? op.a(item, m, k) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
  };
  auto store_a = [&](int buf) {
#pragma unroll
    for (int j = 0; j < Tile::A_LOADS; ++j) {
      const int idx = tid + THREADS * j;
      *reinterpret_cast<uint2*>(As + (buf * BM + idx / 8) * LDS + 4 * (idx % 8)) = pack4<W>(areg[j]);
    }
  };

  float acc[MF][NF][4];
#pragma unroll
  for (int i = 0; i < MF; ++i)
#pragma unroll
    for (int j = 0; j < NF; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;

  // Step kt uses buffer (kt - kt0) % S.
#pragma unroll
  for (int st = 0; st < S - 1; ++st) {
    if (kt0 + st < kt1) {
      load_b(st, (kt0 + st) * BK);
      if constexpr (A16) {
        load_a16(st, (kt0 + st) * BK);
      } else {
        load_a((kt0 + st) * BK);
        store_a(st);
      }
    }
    cp_async_commit();  // one group per stage, empty or not, so that wait<S - 2> always means "stage kt landed"
  }
#pragma unroll 1
  for (int kt = kt0; kt < kt1; ++kt) {
    cp_async_wait<S - 2>();
    __syncthreads();  // stage kt is visible to all; every warp is done with stage kt - 1, whose buffer is refilled next
    const int next = kt + S - 1, buf = (kt - kt0) % S, next_buf = (next - kt0) % S;
    if (next < kt1) {
      load_b(next_buf, next * BK);
      if constexpr (A16) load_a16(next_buf, next * BK);
      else load_a(next * BK);
    }
    cp_async_commit();
    const uint16_t* at = As + buf * BM * LDS;
    const uint16_t* bt = Bs + buf * BN * LDS;
#pragma unroll
    for (int ks = 0; ks < BK / 16; ++ks) {
      const int kk = ks * 16 + 2 * t4;
      uint32_t a[MF][4], b[NF][2];
#pragma unroll
      for (int mf = 0; mf < MF; ++mf) {
        const uint16_t* r = at + (wm * Tile::WM + mf * 16 + g) * LDS + kk;
        a[mf][0] = *reinterpret_cast<const uint32_t*>(r);
        a[mf][1] = *reinterpret_cast<const uint32_t*>(r + 8 * LDS);
        a[mf][2] = *reinterpret_cast<const uint32_t*>(r + 8);
        a[mf][3] = *reinterpret_cast<const uint32_t*>(r + 8 * LDS + 8);
      }
#pragma unroll
      for (int nf = 0; nf < NF; ++nf) {
        const uint16_t* r = bt + (wn * Tile::WN + nf * 8 + g) * LDS + kk;
        b[nf][0] = *reinterpret_cast<const uint32_t*>(r);
        b[nf][1] = *reinterpret_cast<const uint32_t*>(r + 8);
      }
#pragma unroll
      for (int mf = 0; mf < MF; ++mf)
#pragma unroll
        for (int nf = 0; nf < NF; ++nf) mma16816<W>(acc[mf][nf], a[mf], b[nf]);
    }
    if constexpr (!A16) {
      if (next < kt1) store_a(next_buf);  // that buffer was last read in step kt - 1, before this step's barrier
    }
  }
  cp_async_wait<0>();

  // Accumulator fragment: c0, c1 at (row g, columns 2t, 2t+1), c2, c3 at row g + 8.
#pragma unroll
  for (int mf = 0; mf < MF; ++mf) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int m = m0 + wm * Tile::WM + mf * 16 + g + 8 * half;
      if (m >= M) continue;
      if constexpr (Op::PAIRED) {
#pragma unroll
        for (int nf = 0; nf < NF; nf += 2) {
          const int u = blockIdx.x * (BN / 2) + ((wn * NF + nf) / 2) * 8 + 2 * t4;
          if (u < N) op.store_pair(item, m, u, acc[mf][nf][2 * half], acc[mf][nf][2 * half + 1], acc[mf][nf + 1][2 * half], acc[mf][nf + 1][2 * half + 1]);
        }
      } else {
#pragma unroll
        for (int nf = 0; nf < NF; ++nf) {
          const int n = blockIdx.x * BN + wn * Tile::WN + nf * 8 + 2 * t4;
          if (n >= N) continue;
          if constexpr (kSplitK<Op>) {
            if (splits > 1) {
              op.store_add(item, m, n, acc[mf][nf][2 * half], acc[mf][nf][2 * half + 1]);
              continue;
            }
          }
          op.store(item, m, n, acc[mf][nf][2 * half], acc[mf][nf][2 * half + 1]);
        }
      }
    }
  }
}

}  // namespace mc
#include "mc_gemm_wgmma.cuh"  // the sm_90a engine (gemm_wgmma_kernel), built on the helpers above
namespace mc {

/**
 * Raises the tile shapes' dynamic shared-memory limit (the large mma tile needs 80 KB, the wgmma
 * tile 161 KB, the latter only where it runs). f32 weights have no GEMM.
 */
template <class Op, bool A16>
inline cudaError_t gemm_prepare_variant() {
  if (device_info().wgmma)
    if (cudaError_t e = cudaFuncSetAttribute(gemm_wgmma_kernel<Op, A16>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(wgmma::SMEM_BYTES))) return e;
  if (cudaError_t e = cudaFuncSetAttribute(gemm_kernel<Op, GemmLarge, A16>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(GemmLarge::smem_bytes()))) return e;
  if constexpr (!kSplitK<Op>) {
    if (cudaError_t e = cudaFuncSetAttribute(gemm_kernel<Op, GemmDeep, A16>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(GemmDeep::smem_bytes()))) return e;
  }
  return cudaFuncSetAttribute(gemm_kernel<Op, GemmSmall, A16>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(GemmSmall::smem_bytes()));
}
/** Both variants of the Op's kernels: gemm() reads A through the Op, or narrowed once (narrows_a). */
template <class Op>
inline cudaError_t gemm_prepare() {
  if constexpr (kTensorCores<typename Op::W>) {
    if (device_info().sms == 0)
      if (cudaError_t e = init_device_info()) return e;
    if (cudaError_t e = gemm_prepare_variant<Op, false>()) return e;
    return gemm_prepare_variant<Op, true>();
  }
  return cudaSuccess;
}

/** The grid of a GEMM in BM x BN tiles: column blocks (BN / 2 units each when PAIRED), row blocks, items. */
template <class Op, int BM, int BN>
inline dim3 gemm_grid(int items, int max_m, int n_cols) {
  const int cols_per_block = Op::PAIRED ? BN / 2 : BN;
  return dim3((n_cols + cols_per_block - 1) / cols_per_block, (max_m + BM - 1) / BM, items);
}

/** Blocks of that grid (b_rows: weight rows, both matrices when PAIRED). */
template <int BM, int BN>
inline int64_t gemm_blocks(int64_t b_rows, int max_m, int items) {
  return (b_rows + BN - 1) / BN * ((max_m + BM - 1) / BM) * items;
}

template <class Op, class Tile, bool A16>
inline cudaError_t gemm_launch(const Op& op, int items, int max_m, int n_cols, const uint16_t* a16, cudaStream_t s, int splits = 1) {
  dim3 grid = gemm_grid<Op, Tile::BM, Tile::BN>(items, max_m, n_cols);
  grid.z *= unsigned(splits);
  gemm_kernel<Op, Tile, A16><<<grid, Tile::THREADS, Tile::smem_bytes(), s>>>(op, splits, a16);
  return cudaGetLastError();
}

/**
 * Row a16_first_row(item) + m of a16 = the Op's A row m of `item` narrowed to W (block (m, item)):
 * every column block of the GEMM then copies 16-bit A tiles instead of reading (and normalizing,
 * for the fused RMSNorm, or gathering, for the experts) f32 rows again, half the bytes from L2 for
 * the operand that every column block re-reads.
 */
template <class Op>
__global__ void __launch_bounds__(256) gemm_narrow_a_kernel(const Op op, uint16_t* __restrict__ a16) {
  using W = typename Op::W;
  const int m = blockIdx.x, item = blockIdx.y;
  if (m >= op.m_count(item)) return;
  uint16_t* row = a16 + (int64_t(a16_first_row(op, item)) + m) * Op::K;
  if constexpr (kRowNorm<Op>) {
    // The row's statistic here, as row_rstd_kernel computes it.
    const float r = row_rms_scale<Op::K>(op.row_norm.x + int64_t(m) * Op::K, op.row_norm.eps);
    for (int k = threadIdx.x * 4; k < Op::K; k += blockDim.x * 4) *reinterpret_cast<uint2*>(row + k) = pack4<W>(op.row_norm.a(m, k, r));
  } else {
    for (int k = threadIdx.x * 4; k < Op::K; k += blockDim.x * 4) *reinterpret_cast<uint2*>(row + k) = pack4<W>(op.a(item, m, k));
  }
}

/**
 * Whether gemm() narrows A once first (a16) for a GEMM of max_m rows: from device_info().a16_min_rows
 * rows, by default every prefill GEMM. Not only for the bytes (f32 A re-read by every column block):
 * read through the Op, A is loaded one K step ahead in registers, so with few tokens, where a step's
 * math is short, every step waits for an L2 round trip; narrowed, its tiles are copied by cp.async
 * STAGES - 1 steps ahead with B's. (From 64 rows only, the 7B's 16-token prefill ran at 27% of its
 * weight-read floor: bench/RESULTS.md, runs 5-10 and 12.)
 */
inline bool narrows_a(int max_m) { return device_info().a16_min_rows > 0 && max_m >= device_info().a16_min_rows; }

/**
 * The fewest rows an item may hold (max_m: the prefill's tokens, for the experts too, where it bounds
 * their routed rows) for a prefill GEMM to go to wgmma by default.
 */
constexpr int kWgmmaMinRows = 32;

/** Most K ranges a GEMM is split into, and the fewest K steps (of 32) in one range. */
constexpr int kMaxSplits = 8, kMinSplitSteps = 8;

/**
 * How many K ranges to split a small-tile GEMM into: with fewer blocks than SMs (few tokens and
 * few columns, e.g. wo and w2 of a short prefill) each block streams its weights alone and the
 * grid reads them at a fraction of the bandwidth; splitting K gives every SM about two blocks. Only
 * for Ops with store_add (their partials are added atomically: the sum's rounding order varies
 * between runs, as with any split-K). 1: no split.
 */
template <class Op>
inline int gemm_splits(int64_t small_blocks, int64_t sms) {
  if constexpr (kSplitK<Op>) {
    constexpr int KT = (Op::K + GemmSmall::BK - 1) / GemmSmall::BK;
    if (small_blocks >= sms) return 1;
    const int64_t wanted = (2 * sms + small_blocks - 1) / small_blocks;
    return int(std::max<int64_t>(1, std::min<int64_t>({wanted, kMaxSplits, KT / kMinSplitSteps})));
  }
  return 1;
}

/** gemm() below, with A read through the Op or (A16) copied from `a16`. */
template <class Op, bool A16>
inline cudaError_t gemm_run(const Op& op, int items, int max_m, int n_cols, const uint16_t* a16, cudaStream_t s) {
  const int64_t b_rows = Op::PAIRED ? 2 * int64_t(n_cols) : n_cols, sms = device_info().sms > 0 ? device_info().sms : 1;
  const int64_t large_slots = GemmLarge::MIN_BLOCKS * sms, small_slots = GemmSmall::MIN_BLOCKS * sms;
  const int64_t large_waves = (gemm_blocks<GemmLarge::BM, GemmLarge::BN>(b_rows, max_m, items) + large_slots - 1) / large_slots;
  const int64_t small_waves = (gemm_blocks<GemmSmall::BM, GemmSmall::BN>(b_rows, max_m, items) + small_slots - 1) / small_slots;
  if (device_info().wgmma) {
    // A wgmma block is 4 small blocks of work, one block per SM: a wave of it is a small wave of work,
    // assumed done in half the time. Only where its grid keeps at least 3/4 of the SMs busy, and from
    // kWgmmaMinRows rows: with few tokens the weights' bytes set the time, every SM must stream them,
    // and mma.sync's small and deep tiles stream them faster (RESULTS run 23: with 16 tokens wgmma
    // took the 7B's w1|w3 and Mixtral's experts, 1-2% slower than mma.sync; with 128 and 512 tokens
    // it is 19-52% faster).
    const int64_t wg_blocks = gemm_blocks<wgmma::BM, wgmma::BN>(b_rows, max_m, items);
    if (device_info().wgmma_all || (max_m >= kWgmmaMinRows && 4 * wg_blocks >= 3 * sms && (wg_blocks + sms - 1) / sms < 2 * small_waves)) {
      gemm_wgmma_kernel<Op, A16><<<gemm_grid<Op, wgmma::BM, wgmma::BN>(items, max_m, n_cols), wgmma::THREADS, wgmma::SMEM_BYTES, s>>>(op, a16);
      return cudaGetLastError();
    }
  }
  const int64_t small_blocks = gemm_blocks<GemmSmall::BM, GemmSmall::BN>(b_rows, max_m, items);
  const int splits = gemm_splits<Op>(small_blocks, sms);
  if (splits > 1) return gemm_launch<Op, GemmSmall, A16>(op, items, max_m, n_cols, a16, s, splits);
  if constexpr (!kSplitK<Op>) {
    // Fewer blocks than SMs and no split: each block alone on its SM, as deep as it can be (run 16).
    if (small_blocks < sms && device_info().deep_small_tile) return gemm_launch<Op, GemmDeep, A16>(op, items, max_m, n_cols, a16, s);
  }
  // A large wave is 2 small waves of work (4x the work per block, half the slots), done in 2 / 1.5 of the time.
  if (4 * large_waves < 3 * small_waves) return gemm_launch<Op, GemmLarge, A16>(op, items, max_m, n_cols, a16, s);
  return gemm_launch<Op, GemmSmall, A16>(op, items, max_m, n_cols, a16, s);
}

/**
 * Launches over `items` groups (experts) of up to max_m rows each; n_cols = columns, or units when
 * PAIRED. Picks the tile whose grid takes fewer waves, counting a large block as 4 small ones done
 * 1.5x as efficiently (each operand fragment feeds twice the mma): with few tokens, where the
 * weights' bytes set the time, the small tile's 4x as many blocks keep every SM streaming, and a
 * grid just over one wave of large blocks (e.g. 288 on 264 slots) is better cut small.
 * `a16_scratch` holds every item's A rows, Op::K each (several items need the Op's a16_first_row):
 * where narrows_a(max_m), A is narrowed into it once (gemm_narrow_a_kernel) and the GEMM
 * copies it from there. An Op with a RowNorm gets its row statistics here too (RowNorm).
 */
template <class Op>
inline cudaError_t gemm(const Op& op, int items, int max_m, int n_cols, cudaStream_t s, uint16_t* a16_scratch) {
  static_assert(kTensorCores<typename Op::W>, "a GEMM on tensor cores");
  if constexpr (kRowNorm<Op>) {
    if (items != 1) return cudaErrorInvalidValue;  // one row statistic per row of the one item
  }
  if (!narrows_a(max_m) || (items > 1 && !kGroupedA16<Op>)) {
    if constexpr (kRowNorm<Op>) {
      if (cudaError_t e = row_rstd<Op::K>(op.row_norm.x, max_m, op.row_norm.eps, op.row_norm.rstd, s)) return e;
    }
    return gemm_run<Op, false>(op, items, max_m, n_cols, nullptr, s);
  }
  gemm_narrow_a_kernel<Op><<<dim3(max_m, items), 256, 0, s>>>(op, a16_scratch);
  if (cudaError_t e = cudaGetLastError()) return e;
  return gemm_run<Op, true>(op, items, max_m, n_cols, a16_scratch, s);
}

}  // namespace mc
