// Attention over the KV cache ring: split-K decode attention with its combine, and prefill
// attention flash-attention style, on tensor cores for 16-bit caches and in exact f32 for f32
// caches. Part of mc_cuda.cuh (include that).
#pragma once
#include "mc_cuda_base.cuh"

namespace mc {

/**
 * Shared memory of one attention block: a tile of 32 keys and values widened to f32 (keys padded
 * by one float so that lane j reading key j, column d hits bank (j + d) mod 32), plus the queries.
 */
template <int HEAD_DIM>
struct KvTile {
  static constexpr int KEYS = 32, KLD = HEAD_DIM + 1;
  static constexpr size_t bytes() { return size_t(KEYS) * (KLD + HEAD_DIM) * sizeof(float); }
};

/**
 * Loads keys/values at positions [kt, kt + n) from a ring of KV_SLOTS slots (slot = position mod
 * KV_SLOTS) for KV head g, widening to f32.
 */
template <int HEAD_DIM, int KV_DIM, int KV_SLOTS, typename KV>
__device__ __forceinline__ void load_kv_tile(const KV* __restrict__ k_cache, const KV* __restrict__ v_cache, int g, int kt, int n,
                                             float* ks, float* vs) {
  constexpr int VEC = kVec<KV>;
  static_assert(HEAD_DIM % VEC == 0, "a head is read in 16-byte chunks");
  constexpr int CPR = HEAD_DIM / VEC;  // chunks per key
  for (int idx = threadIdx.x; idx < 2 * 32 * CPR; idx += blockDim.x) {
    const int which = idx / (32 * CPR), rem = idx % (32 * CPR), j = rem / CPR, c = rem % CPR;
    if (j >= n) continue;
    const int64_t slot = int64_t(kt + j) % KV_SLOTS;
    const KV* src = (which == 0 ? k_cache : v_cache) + slot * KV_DIM + g * HEAD_DIM + c * VEC;
    float v[VEC];
    unpack<KV>(*reinterpret_cast<const uint4*>(src), v);
    float* dst = which == 0 ? ks + j * KvTile<HEAD_DIM>::KLD + c * VEC : vs + j * HEAD_DIM + c * VEC;
#pragma unroll
    for (int i = 0; i < VEC; ++i) dst[i] = v[i];
  }
}

/**
 * Online-softmax state of one query row, held by one warp: lane l owns output dims l, l + 32, ...
 * update() folds in a tile of keys whose scores lane j computed (s = -inf where masked).
 */
template <int HEAD_DIM>
struct SoftmaxRow {
  static constexpr int DPL = (HEAD_DIM + 31) / 32;
  float m = -INFINITY, l = 0.f, o[DPL] = {};

  template <typename V>
  __device__ __forceinline__ void update(float s, int n, const V* vs, int lane) {
    const float tile_max = warp_max(s);
    if (tile_max == -INFINITY) return;  // every key of the tile is masked for this row
    const float m_new = fmaxf(m, tile_max);
    const float corr = expf(m - m_new);
    const float p = s == -INFINITY ? 0.f : expf(s - m_new);
    l = l * corr + warp_sum(p);
#pragma unroll
    for (int i = 0; i < DPL; ++i) o[i] *= corr;
    for (int j = 0; j < n; ++j) {
      const float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
      for (int i = 0; i < DPL; ++i) {
        const int d = lane + 32 * i;
        if (HEAD_DIM % 32 == 0 || d < HEAD_DIM) o[i] = fmaf(pj, to_f32(vs[j * HEAD_DIM + d]), o[i]);
      }
    }
    m = m_new;
  }
};

/** lane j's score q · key j (q pre-scaled by 1/sqrt(head_dim)), from the tile in shared memory. */
template <int HEAD_DIM>
__device__ __forceinline__ float tile_score(const float* q, const float* ks, int j) {
  const float* k = ks + j * KvTile<HEAD_DIM>::KLD;
  float s = 0.f;
#pragma unroll 8
  for (int d = 0; d < HEAD_DIM; ++d) s = fmaf(q[d], k[d], s);
  return s;
}

/**
 * Up to this many bytes the decode attention's ring is 3 stages deep (compiler/plan/cuda-limits.ts
 * has the same rule): under the 99 KB a block may have on compute capability 8.6 and 8.9, where the
 * sm_80 code also runs.
 */
constexpr size_t kDecodeThreeStagesMax = 96 * 1024;
/**
 * Shared memory of the decode attention: STAGES tiles of 32 keys and values as the cache stores
 * them, copied by cp.async so that the next tiles are in flight while one is scored (a block that
 * loaded, waited, then scored each tile streamed its keys at ~15% of the bandwidth: bench/RESULTS.md
 * run 10), then the block's queries in f32. Key rows are padded by one 16-byte chunk: lane j reads
 * key j in 16-byte pieces, and the 8 lanes of a quarter-warp then hit distinct banks.
 */
template <int HEAD_DIM, int GROUP, typename KV>
struct DecodeTile {
  static constexpr int KEYS = 32, VEC = kVec<KV>, CHUNKS = HEAD_DIM / VEC;  // 16-byte chunks per key
  static constexpr int THREADS = 32 * (GROUP < 4 ? 4 : GROUP);              // a warp per query head, at least 4 to load tiles
  static constexpr int K_LD = HEAD_DIM + VEC;                               // elements per padded key row
  static constexpr int STAGE_ELEMS = KEYS * (K_LD + HEAD_DIM);              // keys, then values
  static constexpr size_t STAGE_BYTES = size_t(STAGE_ELEMS) * sizeof(KV), Q_BYTES = size_t(GROUP) * HEAD_DIM * sizeof(float);
  /** 3 stages, or 2 where 3 would pass kDecodeThreeStagesMax (wide f32 heads). */
  static constexpr int STAGES = 3 * STAGE_BYTES + Q_BYTES <= kDecodeThreeStagesMax ? 3 : 2;
  static constexpr size_t bytes() { return STAGES * STAGE_BYTES + Q_BYTES; }
  static_assert(HEAD_DIM % VEC == 0, "a head is copied in 16-byte chunks");
  static_assert(THREADS <= 1024, "a warp per query head of a KV group: at most 32 (compiler/plan/cuda-limits.ts refuses more)");
};

/**
 * Decode (one query token), split along the keys (flash-decoding): item (split, kv head) reads its
 * share of the visible keys once for all GROUP query heads of the KV head (warps 0 .. GROUP - 1 of
 * the block, one a head; every warp of the block copies) and writes an unnormalized partial (o, m,
 * l) per head, head `warp` at dst + warp * head_stride (HEAD_DIM + 2 floats); the combine merges the
 * splits. The split length adapts to the position read from
 * device memory, so a captured graph replays unchanged. Tiles of 32 keys go through a STAGES-deep
 * cp.async ring in `smem` (DecodeTile::bytes()); the first ones are issued before the queries are
 * read. Scores and sums in f32, in the same order as the f32 reference kernels. The same bits
 * whatever THREADS is (only who copies changes): attention_decode_kernel runs one item a block,
 * a decode chain (MC_CUDA_DECODE=layer, DecodeAttentionPhase) several a block of 256 threads.
 */
template <int HEAD_DIM, int GROUP, int N_KV_HEADS, int NSPLIT, int WINDOW, int KV_SLOTS, typename KV, int THREADS>
__device__ __forceinline__ void attention_decode_item(const float* __restrict__ q, const KV* __restrict__ k_cache, const KV* __restrict__ v_cache,
                                                      const int32_t* __restrict__ pos0, float* __restrict__ dst, int64_t head_stride, int split, int g,
                                                      float4* smem) {
  using Tile = DecodeTile<HEAD_DIM, GROUP, KV>;
  static_assert(THREADS % 32 == 0 && THREADS >= 32 * GROUP, "a warp per query head of the KV group");
  constexpr int KV_DIM = N_KV_HEADS * HEAD_DIM, KEYS = Tile::KEYS, STAGES = Tile::STAGES, VEC = Tile::VEC, CHUNKS = Tile::CHUNKS;
  constexpr int K_LD = Tile::K_LD, COPIES = 2 * KEYS * CHUNKS, PER_THREAD = (COPIES + THREADS - 1) / THREADS;
  KV* stages = reinterpret_cast<KV*>(smem);                                                        // [STAGES][keys | values]
  float* qs = reinterpret_cast<float*>(reinterpret_cast<char*>(smem) + STAGES * Tile::STAGE_ELEMS * sizeof(KV));  // [GROUP, HEAD_DIM]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int p = *pos0;
  const int lo = WINDOW > 0 ? max(0, p - WINDOW + 1) : 0;
  const int visible = p - lo + 1;
  const int chunk = ((visible + NSPLIT - 1) / NSPLIT + KEYS - 1) / KEYS * KEYS;
  const int begin = lo + split * chunk, end = min(p + 1, begin + chunk);
  const int tiles = end > begin ? (end - begin + KEYS - 1) / KEYS : 0;

  // Tile t (keys begin + 32t ...) into stage t mod STAGES: every copy issued before any is waited for.
  auto load_tile = [&](int t) {
    KV* ks = stages + (t % STAGES) * Tile::STAGE_ELEMS;
    KV* vs = ks + KEYS * K_LD;
    const int kt = begin + t * KEYS, n = min(KEYS, end - kt);
#pragma unroll
    for (int i = 0; i < PER_THREAD; ++i) {
      const int idx = threadIdx.x + i * THREADS;
      const int which = idx / (KEYS * CHUNKS), j = (idx / CHUNKS) % KEYS, c = idx % CHUNKS;
      if ((COPIES % THREADS != 0 && idx >= COPIES) || j >= n) continue;  // keys past the split are never read
      const int64_t slot = int64_t(kt + j) % KV_SLOTS;
      const KV* src = (which == 0 ? k_cache : v_cache) + slot * KV_DIM + g * HEAD_DIM + c * VEC;
      cp_async16(which == 0 ? ks + j * K_LD + c * VEC : vs + j * HEAD_DIM + c * VEC, src, 16);
    }
  };
#pragma unroll
  for (int t = 0; t < STAGES - 1; ++t) {
    if (t < tiles) load_tile(t);
    cp_async_commit();  // one group per tile slot, empty or not, so that the waits below count alike
  }
  const float scale = 1.0f / sqrtf(float(HEAD_DIM));
#pragma unroll
  for (int i = 0; i < (GROUP * HEAD_DIM + THREADS - 1) / THREADS; ++i) {
    const int idx = threadIdx.x + i * THREADS;
    if (idx < GROUP * HEAD_DIM) qs[idx] = q[g * GROUP * HEAD_DIM + idx] * scale;
  }

  SoftmaxRow<HEAD_DIM> row;
  for (int t = 0; t < tiles; ++t) {
    cp_async_wait<STAGES - 2>();  // tile t's copies (all but the newest STAGES - 2 groups) have landed
    __syncthreads();              // ... everyone's; and every warp is done with tile t - 1's stage (and qs is written)
    if (t + STAGES - 1 < tiles) load_tile(t + STAGES - 1);  // into the stage tile t - 1 used
    cp_async_commit();
    if (warp < GROUP) {
      const KV* ks = stages + (t % STAGES) * Tile::STAGE_ELEMS;
      const KV* vs = ks + KEYS * K_LD;
      const int n = min(KEYS, end - (begin + t * KEYS));
      float s = -INFINITY;
      if (lane < n) {
        // lane j's score q · key j, d ascending as tile_score sums it
        const float* qh = qs + warp * HEAD_DIM;
        const KV* k = ks + lane * K_LD;
        s = 0.f;
#pragma unroll 4
        for (int c = 0; c < CHUNKS; ++c) {
          float kv[VEC];
          unpack<KV>(*reinterpret_cast<const uint4*>(k + c * VEC), kv);
#pragma unroll
          for (int i = 0; i < VEC; ++i) s = fmaf(qh[c * VEC + i], kv[i], s);
        }
      }
      row.update(s, n, vs, lane);
    }
  }
  cp_async_wait<0>();  // no copy may still target shared memory when the block exits (or its next item starts)
  if (warp < GROUP) {
    float* out = dst + warp * head_stride;
#pragma unroll
    for (int i = 0; i < SoftmaxRow<HEAD_DIM>::DPL; ++i) {
      const int d = lane + 32 * i;
      if (d < HEAD_DIM) out[d] = row.o[i];
    }
    if (lane == 0) out[HEAD_DIM] = row.m, out[HEAD_DIM + 1] = row.l;  // an empty split: m = -inf, l = 0
  }
}

/**
 * Where item (split, kv head g) writes its first query head's partial in partials laid out [N_HEADS,
 * NSPLIT, HEAD_DIM + 2]; the group's other heads follow NSPLIT * (HEAD_DIM + 2) floats apart.
 */
template <int HEAD_DIM, int GROUP, int NSPLIT>
__device__ __forceinline__ float* split_partial(float* partial, int split, int g) {
  return partial + (int64_t(g) * GROUP * NSPLIT + split) * (HEAD_DIM + 2);
}

/** The decode attention as kernels launch it: block (split, kv head), one item each. */
template <int HEAD_DIM, int GROUP, int N_KV_HEADS, int NSPLIT, int WINDOW, int KV_SLOTS, typename KV>
__global__ void __launch_bounds__(DecodeTile<HEAD_DIM, GROUP, KV>::THREADS) attention_decode_kernel(
    const float* __restrict__ q /*[N_HEADS * HEAD_DIM]*/, const KV* __restrict__ k_cache, const KV* __restrict__ v_cache,
    const int32_t* __restrict__ pos0, float* __restrict__ partial /*[N_HEADS, NSPLIT, HEAD_DIM + 2]*/) {
  extern __shared__ float4 attn_smem[];
  wait_for_previous_kernel();  // launched with PDL under MC_CUDA_PDL=all: q and this position's K/V come from the QKV GEMV
  attention_decode_item<HEAD_DIM, GROUP, N_KV_HEADS, NSPLIT, WINDOW, KV_SLOTS, KV, DecodeTile<HEAD_DIM, GROUP, KV>::THREADS>(
      q, k_cache, v_cache, pos0, split_partial<HEAD_DIM, GROUP, NSPLIT>(partial, blockIdx.x, blockIdx.y), int64_t(NSPLIT) * (HEAD_DIM + 2), blockIdx.x,
      blockIdx.y, attn_smem);
}

/**
 * out = Σ_s o_s e^(m_s - M) / Σ_s l_s e^(m_s - M): the NSPLIT splits of one head merged, by `threads`
 * threads from `tid`; part(s, i) is float i of split s's partial (o[0..HEAD_DIM), m, l), wherever the
 * partials are (global memory: attention_combine_head; the shared memory of a cluster's blocks:
 * attention_decode_cluster_kernel), so that both merge with the same arithmetic.
 * Every partial is read unconditionally, a batch of up to MAX_BATCH splits' loads issued before the first is used,
 * so that a head waits for 2-3 L2 round trips a batch, not one or more per split: the first form summed l in a
 * loop unrolled by 4 and loaded each split's o behind a test of its m, ~25-49 round trips in a row by its PTX
 * (bench/RESULTS.md run 24). The sums are the first form's, term for term and in the same order; an empty
 * split (m = -inf, l = 0, o = 0) adds o_s · 0, so empty splits after the others leave the sums as they
 * were (but for the sign of a sum that is exactly zero).
 */
template <int HEAD_DIM, int NSPLIT, int MAX_BATCH, typename Part>
__device__ __forceinline__ void combine_splits(const Part& part, float* __restrict__ out /*[HEAD_DIM]*/, int tid, int threads) {
  // Splits per batch of loads (MAX_BATCH: 64 take 168 registers, 32 fit a decode chain's 128).
  // Batches are not unrolled into one another: a pass over more splits than one batch would hold
  // them all in registers (255 and spills at 128 splits).
  constexpr int B = NSPLIT < MAX_BATCH ? NSPLIT : MAX_BATCH;
  float m = -INFINITY;
#pragma unroll 1
  for (int s0 = 0; s0 < NSPLIT; s0 += B) {
    float ms[B];
#pragma unroll
    for (int i = 0; i < B; ++i) {
      if (s0 + i < NSPLIT) ms[i] = part(s0 + i, HEAD_DIM);
    }
#pragma unroll
    for (int i = 0; i < B; ++i) {
      if (s0 + i < NSPLIT) m = fmaxf(m, ms[i]);
    }
  }
  float l = 0.f;
#pragma unroll 1
  for (int s0 = 0; s0 < NSPLIT; s0 += B) {
    float ms[B], ls[B];
#pragma unroll
    for (int i = 0; i < B; ++i) {
      if (s0 + i < NSPLIT) ms[i] = part(s0 + i, HEAD_DIM), ls[i] = part(s0 + i, HEAD_DIM + 1);
    }
#pragma unroll
    for (int i = 0; i < B; ++i) {
      if (s0 + i < NSPLIT) l += ls[i] * expf(ms[i] - m);
    }
  }
  for (int d = tid; d < HEAD_DIM; d += threads) {
    float o = 0.f;
#pragma unroll 1
    for (int s0 = 0; s0 < NSPLIT; s0 += B) {
      float ms[B], os[B];
#pragma unroll
      for (int i = 0; i < B; ++i) {
        if (s0 + i < NSPLIT) ms[i] = part(s0 + i, HEAD_DIM), os[i] = part(s0 + i, d);
      }
#pragma unroll
      for (int i = 0; i < B; ++i) {
        if (s0 + i < NSPLIT) o += os[i] * (ms[i] != -INFINITY ? expf(ms[i] - m) : 0.f);
      }
    }
    out[d] = o / l;
  }
}

/** Split s's partial of one head in global memory: [NSPLIT, LD] floats from p. */
template <int LD>
struct GlobalPartials {
  const float* __restrict__ p;
  __device__ __forceinline__ float operator()(int s, int i) const { return p[s * LD + i]; }
};

/** Head h of partials laid out [N_HEADS, NSPLIT, HEAD_DIM + 2] merged into out[h * HEAD_DIM ...] (combine_splits). */
template <int HEAD_DIM, int NSPLIT, int MAX_BATCH = 64>
__device__ __forceinline__ void attention_combine_head(const float* __restrict__ partial, float* __restrict__ out /*[N_HEADS * HEAD_DIM]*/, int h, int tid, int threads) {
  constexpr int LD = HEAD_DIM + 2;
  combine_splits<HEAD_DIM, NSPLIT, MAX_BATCH>(GlobalPartials<LD>{partial + int64_t(h) * NSPLIT * LD}, out + int64_t(h) * HEAD_DIM, tid, threads);
}

/** The combine as kernels launch it: a block per head. */
template <int HEAD_DIM, int NSPLIT>
__global__ void __launch_bounds__(128) attention_combine_kernel(const float* __restrict__ partial, float* __restrict__ out /*[N_HEADS * HEAD_DIM]*/) {
  wait_for_previous_kernel();  // under MC_CUDA_PDL=all
  attention_combine_head<HEAD_DIM, NSPLIT>(partial, out, blockIdx.x, threadIdx.x, blockDim.x);
}

// ---- the decode attention in one kernel: a KV head's splits as one thread-block cluster (sm_90+) -----

/** Shared memory of attention_decode_cluster_kernel's blocks: the decode tile's, then the block's partials [GROUP, HEAD_DIM + 2]. */
template <int HEAD_DIM, int GROUP, typename KV>
struct DecodeClusterTile {
  static constexpr size_t PARTIALS_OFFSET = DecodeTile<HEAD_DIM, GROUP, KV>::bytes();
  static constexpr size_t bytes() { return PARTIALS_OFFSET + size_t(GROUP) * (HEAD_DIM + 2) * sizeof(float); }
  static_assert(PARTIALS_OFFSET % 16 == 0, "the partials start 16-byte aligned");
};

/**
 * The decode attention and its combine in one kernel (MC_CUDA_ATTN_CLUSTER): block (split, kv head g)
 * computes attention_decode_item's partials for split `split` of NSPLIT (its rank in a cluster of
 * NSPLIT blocks along x, one cluster a KV head) into its own shared memory; after a cluster barrier the
 * cluster's threads merge them, one an output (h, d) as far as they go, reading every block's
 * partials through distributed shared memory with combine_splits, into out. No partials go through
 * global memory, and there is no second kernel and no boundary between the two: the launch and L2
 * round trips those cost are what the short contexts' attention loses (bench/RESULTS.md runs 24-26).
 * It sums as launch_decode<NSPLIT>'s two kernels do. Against the split kernels in the default's splits,
 * while every split of both has one tile at most (visible <= 32 * the fewer splits of the two), the
 * kernel with more splits has only empty ones past the other's, and both give the same bits
 * (test/gpu/kernels.cu checks it). A
 * second cluster barrier keeps every block's shared memory until all have read it.
 */
template <int HEAD_DIM, int GROUP, int N_KV_HEADS, int NSPLIT, int WINDOW, int KV_SLOTS, typename KV>
__global__ void __launch_bounds__(DecodeTile<HEAD_DIM, GROUP, KV>::THREADS) attention_decode_cluster_kernel(
    const float* __restrict__ q /*[N_HEADS * HEAD_DIM]*/, const KV* __restrict__ k_cache, const KV* __restrict__ v_cache,
    const int32_t* __restrict__ pos0, float* __restrict__ out /*[N_HEADS * HEAD_DIM]*/) {
  constexpr int THREADS = DecodeTile<HEAD_DIM, GROUP, KV>::THREADS;
  // Each output (h, d) of the KV head's group one thread of the cluster, as far as the cluster has
  // threads (else a share of them a head, each merging several d); the rest only wait. Every thread
  // of a head's share computes that head's m and l itself: no further barrier.
  constexpr int PER_HEAD = NSPLIT * THREADS / GROUP < HEAD_DIM ? NSPLIT * THREADS / GROUP : HEAD_DIM;
  static_assert(PER_HEAD >= 1, "a cluster has at least one thread a query head of its group");
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900  // clusters exist from sm_90: the host never launches this elsewhere
  constexpr int LD = HEAD_DIM + 2;
  extern __shared__ float4 attn_smem[];
  float* partials = reinterpret_cast<float*>(reinterpret_cast<char*>(attn_smem) + DecodeClusterTile<HEAD_DIM, GROUP, KV>::PARTIALS_OFFSET);  // [GROUP, LD]
  const int split = int(cluster_rank()), g = int(blockIdx.y);  // launched without PDL (mc::launch_cluster): nothing to wait for
  attention_decode_item<HEAD_DIM, GROUP, N_KV_HEADS, NSPLIT, WINDOW, KV_SLOTS, KV, THREADS>(q, k_cache, v_cache, pos0, partials, LD, split, g, attn_smem);
  cluster_sync();  // every split's partials written, and visible to the cluster
  const int t = split * THREADS + int(threadIdx.x), h = t / PER_HEAD;
  if (h < GROUP) {
    const float* mine = partials + h * LD;
    combine_splits<HEAD_DIM, NSPLIT, 64>([mine](int s, int i) { return ld_shared_cluster(mine + i, unsigned(s)); }, out + (int64_t(g) * GROUP + h) * HEAD_DIM,
                                         t % PER_HEAD, PER_HEAD);
  }
  cluster_sync();  // no block exits (and gives up its shared memory) while another still reads it
#else
  __trap();
#endif
}

// ---- the decode attention as phases of a decode chain (MC_CUDA_DECODE=layer, mc::gemv_chain) -------
// A phase is a chain link that is not a GEMV: every block of the chain's grid (256 threads) calls
// run(), which strides over the phase's items; a grid barrier separates it from the links around it.

/** The decode attention's items (split, kv head), each as attention_decode_kernel's block computes it. */
template <int HEAD_DIM, int GROUP, int N_KV_HEADS, int NSPLIT, int WINDOW, int KV_SLOTS, typename KV>
struct DecodeAttentionPhase {
  static constexpr bool PHASE = true;
  static constexpr int ITEMS = NSPLIT * N_KV_HEADS;
  static constexpr size_t smem_bytes() { return DecodeTile<HEAD_DIM, GROUP, KV>::bytes(); }
  const float* q;  // [N_HEADS * HEAD_DIM]
  const KV *k_cache, *v_cache;
  const int32_t* pos0;
  float* partial;  // [N_HEADS, NSPLIT, HEAD_DIM + 2]
  __device__ __forceinline__ void run(float4* smem) const {
    static_assert(GROUP <= 8, "a chain's block has 8 warps: one a query head of the KV group");
#pragma unroll 1
    for (int item = blockIdx.x; item < ITEMS; item += gridDim.x) {
      const int split = item % NSPLIT, g = item / NSPLIT;
      attention_decode_item<HEAD_DIM, GROUP, N_KV_HEADS, NSPLIT, WINDOW, KV_SLOTS, KV, 256>(
          q, k_cache, v_cache, pos0, split_partial<HEAD_DIM, GROUP, NSPLIT>(partial, split, g), int64_t(NSPLIT) * (HEAD_DIM + 2), split, g, smem);
      __syncthreads();  // every warp is done with the ring before the next item refills it
    }
  }
};

/** The combine's heads, each as attention_combine_kernel's block computes it. */
template <int HEAD_DIM, int N_HEADS, int NSPLIT>
struct DecodeCombinePhase {
  static constexpr bool PHASE = true;
  static constexpr int ITEMS = N_HEADS;
  static constexpr size_t smem_bytes() { return 0; }
  const float* partial;
  float* out;  // [N_HEADS * HEAD_DIM]
  __device__ __forceinline__ void run(float4*) const {
#pragma unroll 1
    for (int h = blockIdx.x; h < N_HEADS; h += gridDim.x) attention_combine_head<HEAD_DIM, NSPLIT, 32>(partial, out, h, threadIdx.x, blockDim.x);
  }
};

/**
 * Prefill in f32 (f32 KV caches, or head dims that are not whole mma steps; 16-bit caches take
 * attention_flash_prefill_kernel below): block (query tile, kv head) holds BQ tokens x GROUP heads of queries and streams the
 * keys both tiles can see through shared memory once (flash-attention style: online softmax, no
 * score matrix in memory); each of the 8 warps owns rows warp, warp + 8, ... Causal and window
 * masks per row: a query at p sees keys (p - WINDOW, p].
 */
template <int HEAD_DIM, int GROUP>
struct PrefillTile {
  static constexpr int BQ = GROUP >= 32 ? 1 : 32 / GROUP;  // tokens per block: about 32 query rows
  static constexpr int ROWS = BQ * GROUP, WARPS = 8, RPW = (ROWS + WARPS - 1) / WARPS;
  static constexpr size_t smem_bytes() { return KvTile<HEAD_DIM>::bytes() + size_t(ROWS) * HEAD_DIM * sizeof(float); }
};

template <int HEAD_DIM, int GROUP, int N_KV_HEADS, int WINDOW, int KV_SLOTS, typename KV>
__global__ void __launch_bounds__(256) attention_prefill_kernel(const float* __restrict__ q /*[T, N_HEADS * HEAD_DIM]*/, int T,
                                                                const KV* __restrict__ k_cache, const KV* __restrict__ v_cache,
                                                                const int32_t* __restrict__ pos0, float* __restrict__ out) {
  using Tile = PrefillTile<HEAD_DIM, GROUP>;
  constexpr int KV_DIM = N_KV_HEADS * HEAD_DIM, Q_DIM = N_KV_HEADS * GROUP * HEAD_DIM;
  extern __shared__ float4 attn_smem[];
  float* ks = reinterpret_cast<float*>(attn_smem);
  float* vs = ks + 32 * KvTile<HEAD_DIM>::KLD;
  float* qs = vs + 32 * HEAD_DIM;  // [ROWS, HEAD_DIM]
  const int g = blockIdx.y, t0 = blockIdx.x * Tile::BQ, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int tn = min(Tile::BQ, T - t0);
  const int p_first = *pos0 + t0, p_last = p_first + tn - 1;
  const float scale = 1.0f / sqrtf(float(HEAD_DIM));
  for (int i = threadIdx.x; i < Tile::ROWS * HEAD_DIM; i += blockDim.x) {
    const int r = i / HEAD_DIM, d = i % HEAD_DIM, t = t0 + r / GROUP, h = g * GROUP + r % GROUP;
    qs[i] = t < T ? q[int64_t(t) * Q_DIM + h * HEAD_DIM + d] * scale : 0.f;
  }
  SoftmaxRow<HEAD_DIM> rows[Tile::RPW];
  const int lo = WINDOW > 0 ? max(0, p_first - WINDOW + 1) : 0;
  for (int kt = lo; kt <= p_last; kt += 32) {
    const int n = min(32, p_last + 1 - kt);
    __syncthreads();
    load_kv_tile<HEAD_DIM, KV_DIM, KV_SLOTS>(k_cache, v_cache, g, kt, n, ks, vs);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < Tile::RPW; ++i) {
      const int r = warp + Tile::WARPS * i;
      if (r >= Tile::ROWS || t0 + r / GROUP >= T) continue;  // uniform per warp
      const int p = p_first + r / GROUP;
      const int key = kt + lane;
      const bool visible = lane < n && key <= p && (WINDOW == 0 || key > p - WINDOW);
      rows[i].update(visible ? tile_score<HEAD_DIM>(qs + r * HEAD_DIM, ks, lane) : -INFINITY, n, vs, lane);
    }
  }
#pragma unroll
  for (int i = 0; i < Tile::RPW; ++i) {
    const int r = warp + Tile::WARPS * i, t = t0 + r / GROUP;
    if (r >= Tile::ROWS || t >= T) continue;
    float* o = out + int64_t(t) * Q_DIM + (g * GROUP + r % GROUP) * HEAD_DIM;
#pragma unroll
    for (int j = 0; j < SoftmaxRow<HEAD_DIM>::DPL; ++j) {
      const int d = lane + 32 * j;
      if (d < HEAD_DIM) o[d] = rows[i].o[j] / rows[i].l;
    }
  }
}

/**
 * Prefill on tensor cores, for 16-bit KV caches (flash-attention 2 with mma.sync m16n8k16). Block =
 * (query tile, KV head); its 64 query rows are (token, head) pairs of the GROUP heads that share the
 * KV head, so one read of a key tile serves the whole group. Each of the 4 warps owns 16 rows and
 * keeps them in registers: Q as A fragments (pre-scaled by log2(e)/sqrt(HEAD_DIM), so the softmax
 * runs on exp2), S = Q Kᵀ over 64 keys, the online softmax on the accumulators, and O += P V with
 * P narrowed to KV's type in place (an m16n8 accumulator pair is an m16k16 A fragment) and V read
 * by ldmatrix.trans. Key tiles are double-buffered by cp.async; keys past the tile's last query are
 * zero-filled, so a masked score multiplies a finite value. Numerics: Q and P are rounded to KV's
 * 16-bit type (relative error ~2^-9 each), scores and sums are f32.
 */
template <int HEAD_DIM, int GROUP>
struct FlashTile {
  static constexpr int ROWS = 64, WARPS = 4, KEYS = 64;
  static constexpr int BQ = ROWS / GROUP;       // tokens per block (rows past BQ * GROUP idle)
  static constexpr int LD = HEAD_DIM + 8;       // padded key/value row: fragment loads and ldmatrix rows hit distinct banks
  static constexpr size_t smem_bytes() { return size_t(2) * 2 * KEYS * LD * sizeof(uint16_t); }
};
/** Whether the prefill attention of these shapes runs on tensor cores (else attention_prefill_kernel). */
template <typename KV, int HEAD_DIM, int GROUP>
constexpr bool kFlashPrefill = kTensorCores<KV> && HEAD_DIM % 16 == 0 && HEAD_DIM <= 128 && GROUP <= 64;

template <int HEAD_DIM, int GROUP, int N_KV_HEADS, int WINDOW, int KV_SLOTS, typename KV>
__global__ void __launch_bounds__(128) attention_flash_prefill_kernel(const float* __restrict__ q /*[T, N_HEADS * HEAD_DIM]*/, int T,
                                                                      const KV* __restrict__ k_cache, const KV* __restrict__ v_cache,
                                                                      const int32_t* __restrict__ pos0, float* __restrict__ out) {
  using Tile = FlashTile<HEAD_DIM, GROUP>;
  constexpr int KV_DIM = N_KV_HEADS * HEAD_DIM, Q_DIM = N_KV_HEADS * GROUP * HEAD_DIM;
  constexpr int KEYS = Tile::KEYS, LD = Tile::LD, DK = HEAD_DIM / 16, DN = HEAD_DIM / 8, NF = KEYS / 8;
  constexpr int CHUNKS = HEAD_DIM / 8;  // 16-byte chunks per key row
  extern __shared__ float4 attn_smem[];
  uint16_t* ks = reinterpret_cast<uint16_t*>(attn_smem);  // [2][KEYS][LD]
  uint16_t* vs = ks + 2 * KEYS * LD;                      // [2][KEYS][LD]
  // Last query tiles first: they see the most keys, so the short early tiles fill the tail of the grid.
  const int g = blockIdx.y, t0 = (gridDim.x - 1 - blockIdx.x) * Tile::BQ, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int qr = lane >> 2, qc = 2 * (lane & 3);  // fragment row (and row + 8) and column pair of this lane
  const int tn = min(Tile::BQ, T - t0);
  const int p_first = *pos0 + t0, p_last = p_first + tn - 1;
  const int lo = WINDOW > 0 ? max(0, p_first - WINDOW + 1) : 0;

  auto load_tile = [&](int buf, int kt) {
    for (int idx = threadIdx.x; idx < 2 * KEYS * CHUNKS; idx += blockDim.x) {
      const int which = idx / (KEYS * CHUNKS), j = (idx / CHUNKS) % KEYS, c = idx % CHUNKS;
      const int kp = kt + j;
      const KV* cache = which == 0 ? k_cache : v_cache;
      const bool ok = kp <= p_last;
      const KV* src = ok ? cache + (int64_t(kp) % KV_SLOTS) * KV_DIM + g * HEAD_DIM + c * 8 : cache;
      cp_async16((which == 0 ? ks : vs) + (buf * KEYS + j) * LD + c * 8, src, ok ? 16 : 0);
    }
  };
  load_tile(0, lo);
  cp_async_commit();

  // This lane's two rows (qr and qr + 8 of the warp's 16): token and head, and whether they exist.
  int row_pos[2];
  bool row_live[2];
  uint32_t qf[DK][4];
  const float qscale = 1.4426950408889634f / sqrtf(float(HEAD_DIM));
#pragma unroll
  for (int h2 = 0; h2 < 2; ++h2) {
    const int r = warp * 16 + qr + 8 * h2, t = t0 + r / GROUP;
    row_live[h2] = r < Tile::BQ * GROUP && t < T;
    row_pos[h2] = p_first + r / GROUP;
    const float* qrow = q + int64_t(t) * Q_DIM + (g * GROUP + r % GROUP) * HEAD_DIM;
#pragma unroll
    for (int kc = 0; kc < DK; ++kc) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int d = 16 * kc + 8 * half + qc;
        const float2 v = row_live[h2] ? *reinterpret_cast<const float2*>(qrow + d) : make_float2(0.f, 0.f);
        qf[kc][h2 + 2 * half] = pack2<KV>(v.x * qscale, v.y * qscale);  // a0: (row, k), a1: (row + 8, k), a2/a3: k + 8
      }
    }
  }

  float o[DN][4];
#pragma unroll
  for (int i = 0; i < DN; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // l: this lane's columns only, summed over the quad at the end

  int buf = 0;
  for (int kt = lo; kt <= p_last; kt += KEYS, buf ^= 1) {
    __syncthreads();  // every warp is done with the other buffer (the previous tile)
    if (kt + KEYS <= p_last) load_tile(buf ^ 1, kt + KEYS);
    cp_async_commit();
    cp_async_wait<1>();  // this tile's copies (all but the newest group) have landed
    __syncthreads();     // ... everyone's
    const uint16_t* kb = ks + buf * KEYS * LD;
    const uint16_t* vb = vs + buf * KEYS * LD;

    float s[NF][4];
#pragma unroll
    for (int nf = 0; nf < NF; ++nf) {
      s[nf][0] = s[nf][1] = s[nf][2] = s[nf][3] = 0.f;
      const uint16_t* krow = kb + (nf * 8 + qr) * LD + qc;
#pragma unroll
      for (int kc = 0; kc < DK; ++kc) {
        const uint32_t b[2] = {*reinterpret_cast<const uint32_t*>(krow + 16 * kc), *reinterpret_cast<const uint32_t*>(krow + 16 * kc + 8)};
        mma16816<KV>(s[nf], qf[kc], b);
      }
    }
    // Mask (causal and window), then the online softmax of rows qr (i = 0, 1) and qr + 8 (i = 2, 3).
#pragma unroll
    for (int h2 = 0; h2 < 2; ++h2) {
      const int p = row_pos[h2];
      float mx = -INFINITY;
#pragma unroll
      for (int nf = 0; nf < NF; ++nf)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int kp = kt + nf * 8 + qc + e;
          const bool visible = kp <= p && (WINDOW == 0 || kp > p - WINDOW);
          float& x = s[nf][2 * h2 + e];
          x = visible ? x : -INFINITY;
          mx = fmaxf(mx, x);
        }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[h2], mx);
      const float base = m_new == -INFINITY ? 0.f : m_new;  // a row with nothing visible yet keeps p = 0
      const float corr = exp2f(m[h2] - base);
      m[h2] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int nf = 0; nf < NF; ++nf)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float& x = s[nf][2 * h2 + e];
          x = exp2f(x - base);
          sum += x;
        }
      l[h2] = l[h2] * corr + sum;
#pragma unroll
      for (int dn = 0; dn < DN; ++dn) o[dn][2 * h2] *= corr, o[dn][2 * h2 + 1] *= corr;
    }
    // O += P V, 16 keys at a time: accumulator tiles 2j and 2j + 1 are the A fragment of keys 16j..16j+15.
#pragma unroll
    for (int j = 0; j < KEYS / 16; ++j) {
      const uint32_t a[4] = {pack2<KV>(s[2 * j][0], s[2 * j][1]), pack2<KV>(s[2 * j][2], s[2 * j][3]),
                             pack2<KV>(s[2 * j + 1][0], s[2 * j + 1][1]), pack2<KV>(s[2 * j + 1][2], s[2 * j + 1][3])};
#pragma unroll
      for (int dn = 0; dn < DN; dn += 2) {
        // Lanes 0-15 address keys 16j + (lane & 15) at dims 8 dn, lanes 16-31 the same keys at dims 8 (dn + 1).
        uint32_t b[4];
        ldmatrix_x4_trans(b, vb + (16 * j + (lane & 15)) * LD + 8 * (dn + (lane >> 4)));
        const uint32_t b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
        mma16816<KV>(o[dn], a, b0);
        mma16816<KV>(o[dn + 1], a, b1);
      }
    }
  }
  cp_async_wait<0>();  // no copy may still target shared memory when the block exits

#pragma unroll
  for (int h2 = 0; h2 < 2; ++h2) {
    float sum = l[h2];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    if (!row_live[h2]) continue;
    const int r = warp * 16 + qr + 8 * h2, t = t0 + r / GROUP;
    float* orow = out + int64_t(t) * Q_DIM + (g * GROUP + r % GROUP) * HEAD_DIM;
    const float inv = 1.0f / sum;
#pragma unroll
    for (int dn = 0; dn < DN; ++dn) *reinterpret_cast<float2*>(orow + 8 * dn + qc) = make_float2(o[dn][2 * h2] * inv, o[dn][2 * h2 + 1] * inv);
  }
}

}  // namespace mc
