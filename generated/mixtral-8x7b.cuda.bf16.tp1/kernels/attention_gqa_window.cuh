// attention_gqa_window: grouped-query attention: each KV head read once for its 4 query heads → causal mask → online softmax
// Rendered from templates/cuda/attention_gqa_window.cuh.hbs for mixtral-8x7b.cuda.bf16.tp1; constants from the plan.
#pragma once
namespace attention_gqa_window {
constexpr int HEAD_DIM = 128;           // head_dim from params.json
constexpr int N_HEADS = 32;       // query heads of this rank
constexpr int N_KV_HEADS = 8; // KV heads of this rank
constexpr int GROUP = 4;            // query heads per KV head (n_heads / n_kv_heads)
static_assert(N_HEADS == N_KV_HEADS * GROUP, "query heads of a rank are whole groups");

/** Decode splits per KV head for about BLOCKS blocks in all (a head's splits, times N_KV_HEADS). */
template <int BLOCKS>
constexpr int max_splits() { return (BLOCKS + N_KV_HEADS - 1) / N_KV_HEADS; }
/** Never more splits than 32-key tiles in the longest range a query can see (the window bounds it). */
template <int WINDOW, int KV_SLOTS, int BLOCKS>
constexpr int splits() {
  constexpr int visible = WINDOW > 0 && WINDOW < KV_SLOTS ? WINDOW : KV_SLOTS;
  return (visible + 31) / 32 < max_splits<BLOCKS>() ? (visible + 31) / 32 : max_splits<BLOCKS>();
}
/**
 * The decode splits a KV head by default: for about 512 blocks (four an SM on a 132-SM H100, which
 * the decode tile's shared memory allows) where a head then has at most 64 splits, one batch of the
 * combine's loads; else for about 256, as under MC_CUDA_ATTN_BLOCKS=256. 512 gives each block half
 * the tiles in a row at long contexts (bench/RESULTS.md run 26, timed with 8 KV heads a rank: 32 → 64
 * splits); a rank of fewer KV heads (tensor parallelism) would have 128-512 splits a head, untimed.
 * Short contexts have as many live splits either way, one 32-key tile each.
 */
template <int WINDOW, int KV_SLOTS>
constexpr int default_splits() { return splits<WINDOW, KV_SLOTS, 512>() <= 64 ? splits<WINDOW, KV_SLOTS, 512>() : splits<WINDOW, KV_SLOTS, 256>(); }
/**
 * The splits of a decode chain's attention (MC_CUDA_DECODE=layer): about 256 blocks whatever
 * MC_CUDA_ATTN_BLOCKS says, one item each for a chain's grid of about two blocks an SM.
 */
template <int WINDOW, int KV_SLOTS>
constexpr int chain_splits() { return splits<WINDOW, KV_SLOTS, 256>(); }
/**
 * The splits of a KV head in the one-kernel decode attention (MC_CUDA_ATTN_CLUSTER): one cluster of up
 * to 16 blocks a KV head (the most an H100 or H200 runs as a cluster, with the non-portable opt-in),
 * fewer where the visible range has fewer 32-key tiles. Up to 512 positions each block has one tile.
 */
template <int WINDOW, int KV_SLOTS>
constexpr int cluster_splits() { return splits<WINDOW, KV_SLOTS, 16 * N_KV_HEADS>(); }
/** The most positions a query of this layer sees: the window, or the whole ring. */
template <int WINDOW, int KV_SLOTS>
constexpr int visible_max() { return WINDOW > 0 && WINDOW < KV_SLOTS ? WINDOW : KV_SLOTS; }
/** Floats of the decode partials: [N_HEADS, splits, HEAD_DIM + 2] (o, m, l per split), for the most splits. */
constexpr int64_t PARTIAL_FLOATS = int64_t(N_HEADS) * max_splits<512>() * (HEAD_DIM + 2);

using Decode = mc::DecodeTile<HEAD_DIM, GROUP, KV>;
using DecodeCluster = mc::DecodeClusterTile<HEAD_DIM, GROUP, KV>;
using Tile = mc::PrefillTile<HEAD_DIM, GROUP>;
using Flash = mc::FlashTile<HEAD_DIM, GROUP>;
/** Prefill on tensor cores for 16-bit caches and head dims that are whole mma steps; f32 caches stay exact. */
constexpr bool FLASH = mc::kFlashPrefill<KV, HEAD_DIM, GROUP>;
static_assert(Decode::bytes() <= mc::kMaxSmemBytes && (FLASH ? Flash::smem_bytes() : Tile::smem_bytes()) <= mc::kMaxSmemBytes,
              "attention tiles larger than a block's shared memory: compiler/plan/cuda-limits.ts should have refused this head_dim");

/** The decode attention of one token in NSPLIT splits a KV head, then their combine. */
template <int NSPLIT, int WINDOW, int KV_SLOTS>
inline cudaError_t launch_decode(const float* q, const int32_t* pos0, const KV* k_cache, const KV* v_cache, float* partial, float* out, cudaStream_t s) {
  // Small kernels between two decode GEMVs: PDL only under MC_CUDA_PDL=all (mc::launch_between).
  if (cudaError_t e = mc::launch_between(mc::attention_decode_kernel<HEAD_DIM, GROUP, N_KV_HEADS, NSPLIT, WINDOW, KV_SLOTS, KV>,
                                         dim3(NSPLIT, N_KV_HEADS), dim3(Decode::THREADS), Decode::bytes(), s, q, k_cache, v_cache, pos0, partial)) return e;
  return mc::launch_between(mc::attention_combine_kernel<HEAD_DIM, NSPLIT>, dim3(N_HEADS), dim3(128), 0, s, const_cast<const float*>(partial), out);
}

/**
 * Whether the one-kernel decode attention exists for this model: its tile and partials fit what an
 * sm_90 block may have (it runs nowhere else). A model whose decode tile is near sm_80's limit (wide
 * f32 heads, large groups) may not have it: prepare_decode_cluster then refuses MC_CUDA_ATTN_CLUSTER.
 */
constexpr bool CLUSTER_FITS = DecodeCluster::bytes() <= mc::kMaxSmemBytesSm90;

/** The decode attention of one token as one kernel: a cluster of cluster_splits() blocks a KV head, merged in the cluster. */
template <int WINDOW, int KV_SLOTS>
inline cudaError_t launch_decode_cluster(const float* q, const int32_t* pos0, const KV* k_cache, const KV* v_cache, float* out, cudaStream_t s) {
  constexpr int NSPLIT = cluster_splits<WINDOW, KV_SLOTS>();
  if constexpr (!CLUSTER_FITS) {
    return cudaErrorInvalidValue;  // prepare_decode_cluster refused the setting already
  } else {
    return mc::launch_cluster(mc::attention_decode_cluster_kernel<HEAD_DIM, GROUP, N_KV_HEADS, NSPLIT, WINDOW, KV_SLOTS, KV>, dim3(NSPLIT, N_KV_HEADS),
                              dim3(Decode::THREADS), DecodeCluster::bytes(), unsigned(NSPLIT), s, q, k_cache, v_cache, pos0, out);
  }
}

/**
 * Whether a decode step takes the one-kernel attention (MC_CUDA_ATTN_CLUSTER=N, N > 0): where this
 * layer's queries never see more than N positions, or where `short_step` says that this step's
 * position p has p + 1 <= N (the model captures a decode graph for each side of N).
 */
template <int WINDOW, int KV_SLOTS>
inline bool decode_in_cluster(bool short_step) {
  const int n = mc::device_info().attn_cluster_positions;
  return n > 0 && (short_step || visible_max<WINDOW, KV_SLOTS>() <= n);
}

/**
 * out = softmax(q kᵀ / sqrt(HEAD_DIM)) v over the keys each query sees: positions (p - WINDOW, p]
 * (WINDOW 0: [0, p]) of the ring of KV_SLOTS slots. T = 1: split-K decode plus a combine, or one
 * kernel of clusters (decode_in_cluster(short_step)); T > 1: the tiled prefill kernel (on tensor
 * cores where FLASH).
 */
template <int WINDOW, int KV_SLOTS>
inline cudaError_t launch(const float* q /*[T, N_HEADS * HEAD_DIM] f32*/, int T, const int32_t* pos0 /*[1]*/,
                          const KV* k_cache /*[KV_SLOTS, KV_DIM]*/, const KV* v_cache /*[KV_SLOTS, KV_DIM]*/,
                          float* partial /*[PARTIAL_FLOATS] scratch*/, float* out /*[T, N_HEADS * HEAD_DIM] f32*/, cudaStream_t s,
                          bool short_step = false) {
  if (T == 1) {
    if (decode_in_cluster<WINDOW, KV_SLOTS>(short_step)) return launch_decode_cluster<WINDOW, KV_SLOTS>(q, pos0, k_cache, v_cache, out, s);
    return mc::device_info().attn_wide ? launch_decode<default_splits<WINDOW, KV_SLOTS>(), WINDOW, KV_SLOTS>(q, pos0, k_cache, v_cache, partial, out, s)
                                       : launch_decode<splits<WINDOW, KV_SLOTS, 256>(), WINDOW, KV_SLOTS>(q, pos0, k_cache, v_cache, partial, out, s);
  }
  if constexpr (FLASH) {
    mc::attention_flash_prefill_kernel<HEAD_DIM, GROUP, N_KV_HEADS, WINDOW, KV_SLOTS, KV>
        <<<dim3((T + Flash::BQ - 1) / Flash::BQ, N_KV_HEADS), 128, Flash::smem_bytes(), s>>>(q, T, k_cache, v_cache, pos0, out);
  } else {
    mc::attention_prefill_kernel<HEAD_DIM, GROUP, N_KV_HEADS, WINDOW, KV_SLOTS, KV>
        <<<dim3((T + Tile::BQ - 1) / Tile::BQ, N_KV_HEADS), 256, Tile::smem_bytes(), s>>>(q, T, k_cache, v_cache, pos0, out);
  }
  return cudaGetLastError();
}

/**
 * The decode attention and its combine as phases of a decode chain (MC_CUDA_DECODE=layer,
 * mc::gemv_chain): the same items as launch_decode<chain_splits()> (under MC_CUDA_ATTN_BLOCKS=256,
 * launch() at T = 1), computed by the chain's blocks of 8 warps (the model renders a layer chain
 * only where GROUP <= 8).
 */
template <int WINDOW, int KV_SLOTS>
using DecodePhase = mc::DecodeAttentionPhase<HEAD_DIM, GROUP, N_KV_HEADS, chain_splits<WINDOW, KV_SLOTS>(), WINDOW, KV_SLOTS, KV>;
template <int WINDOW, int KV_SLOTS>
using CombinePhase = mc::DecodeCombinePhase<HEAD_DIM, N_HEADS, chain_splits<WINDOW, KV_SLOTS>()>;
template <int WINDOW, int KV_SLOTS>
inline DecodePhase<WINDOW, KV_SLOTS> decode(const float* q, const int32_t* pos0, const KV* k_cache, const KV* v_cache, float* partial) {
  return {q, k_cache, v_cache, pos0, partial};
}
template <int WINDOW, int KV_SLOTS>
inline CombinePhase<WINDOW, KV_SLOTS> combine(const float* partial, float* out) { return {partial, out}; }

/** The shared memory launch_decode<NSPLIT, ...> asks of its split kernel. */
template <int NSPLIT, int WINDOW, int KV_SLOTS>
inline cudaError_t prepare_decode() {
  return cudaFuncSetAttribute(mc::attention_decode_kernel<HEAD_DIM, GROUP, N_KV_HEADS, NSPLIT, WINDOW, KV_SLOTS, KV>,
                              cudaFuncAttributeMaxDynamicSharedMemorySize, int(Decode::bytes()));
}

/**
 * The one-kernel decode attention's shared memory and cluster size (over 8 blocks needs the
 * non-portable opt-in), and that the GPU can run such a cluster at all (else
 * cudaErrorInvalidClusterSize; cudaErrorInvalidValue where the model's tile does not fit a block).
 * Only under MC_CUDA_ATTN_CLUSTER (sm_90+).
 */
template <int WINDOW, int KV_SLOTS>
inline cudaError_t prepare_decode_cluster() {
  if constexpr (!CLUSTER_FITS) {
    return cudaErrorInvalidValue;
  } else {
    constexpr int NSPLIT = cluster_splits<WINDOW, KV_SLOTS>();
    const auto kernel = mc::attention_decode_cluster_kernel<HEAD_DIM, GROUP, N_KV_HEADS, NSPLIT, WINDOW, KV_SLOTS, KV>;
    if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(DecodeCluster::bytes()))) return e;
    if (NSPLIT > 8) {
      if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1)) return e;
    }
    // The launch of launch_decode_cluster (the stream aside): whether one such cluster fits the GPU.
    cudaLaunchAttribute attr[1] = {mc::cluster_attribute(NSPLIT)};
    const cudaLaunchConfig_t config = mc::launch_config(dim3(NSPLIT, N_KV_HEADS), dim3(Decode::THREADS), DecodeCluster::bytes(), nullptr, attr, 1);
    int clusters = 0;
    if (cudaError_t e = cudaOccupancyMaxActiveClusters(&clusters, kernel, &config)) return e;
    return clusters > 0 ? cudaSuccess : cudaErrorInvalidClusterSize;
  }
}

template <int WINDOW, int KV_SLOTS>
inline cudaError_t prepare() {
  if (cudaError_t e = prepare_decode<splits<WINDOW, KV_SLOTS, 256>(), WINDOW, KV_SLOTS>()) return e;
  if (cudaError_t e = prepare_decode<default_splits<WINDOW, KV_SLOTS>(), WINDOW, KV_SLOTS>()) return e;
  if (mc::device_info().attn_cluster_positions > 0) {
    if (cudaError_t e = prepare_decode_cluster<WINDOW, KV_SLOTS>()) return e;
  }
  if constexpr (FLASH) {
    return cudaFuncSetAttribute(mc::attention_flash_prefill_kernel<HEAD_DIM, GROUP, N_KV_HEADS, WINDOW, KV_SLOTS, KV>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize, int(Flash::smem_bytes()));
  } else {
    return cudaFuncSetAttribute(mc::attention_prefill_kernel<HEAD_DIM, GROUP, N_KV_HEADS, WINDOW, KV_SLOTS, KV>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize, int(Tile::smem_bytes()));
  }
}
}  // namespace attention_gqa_window
