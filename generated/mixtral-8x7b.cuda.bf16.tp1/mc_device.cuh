// What the library knows of the GPU it runs on (multiprocessors, PDL, which GEMM engine, the
// environment's switches), read once when the first kernel is prepared, and the launch with
// programmatic dependent launch. Part of mc_cuda.cuh (include that).
#pragma once
#include <initializer_list>

#include "mc_cuda_base.cuh"

namespace mc {

/**
 * The device this library runs on: multiprocessor count (GEMV grids), whether PDL exists (sm_90+),
 * and whether prefill GEMMs may use the wgmma engine (mc_gemm_wgmma.cuh): only where the code loaded
 * for this GPU was built for sm_90a, where gemm() judges it faster (unset or MC_CUDA_GEMM=wgmma: the
 * default since bench/RESULTS.md run 23); MC_CUDA_GEMM=wgmma-all puts every prefill GEMM on it
 * (kernel checks), MC_CUDA_GEMM=mma none (mma.sync only: A/B timing).
 */
struct DeviceInfo {
  int sms = 0;
  bool pdl = false;
  bool wgmma_built = false;  // the loaded code has the engine (sm_90a build)
  bool wgmma = false, wgmma_all = false;
  // Prefill GEMMs of at least this many rows narrow A once (gemm_narrow_a_kernel); 0: none.
  // MC_CUDA_A16=N sets it (0 reads A through the Op everywhere, 64 is the rule before run 12: A/B timing).
  int a16_min_rows = 1;
  // Decode GEMVs prefetch this much of the next one's weights into L2 (L2Next): from a GEMV to the
  // next, and across the attention (wq|wk|wv to wo, where the memory pipe idles for longer).
  // MC_CUDA_PREFETCH_MB=N (both) or N,M (M across the attention); off unless set.
  int64_t l2_prefetch_bytes = 0, l2_prefetch_attention_bytes = 0;
  // Programmatic dependent launch beyond the decode GEMVs (run 14 of bench/RESULTS.md times them):
  // MC_CUDA_PDL=all also launches the small kernels between GEMVs (decode attention and its combine,
  // the MoE routing) with it (MC_CUDA_PDL=off: nothing, to time what PDL gives); MC_CUDA_PDL_TRIGGER=
  // last-rows lets a decode GEMV's dependents launch once its last loads are in flight, not at exit.
  bool pdl_between = false, pdl_early_trigger = false;
  // A prefill GEMM of fewer small-tile blocks than SMs that cannot split K takes the 8-stage small
  // tile (mc::GemmDeep, run 16); MC_CUDA_GEMM_DEEP=0 keeps the 4-stage one (A/B timing).
  bool deep_small_tile = true;
  // MC_CUDA_DECODE=chain: a dense model's decode step (one rank) runs each layer's wo, w1|w3, w2 and
  // the next layer's wq|wk|wv as one cooperative kernel with grid barriers (mc::gemv_chain) instead
  // of four launches; MC_CUDA_DECODE=layer also the decode attention and its combine before them (a
  // layer one kernel, where a block's 8 warps hold a KV group's query heads; else as chain). Off
  // ("kernels") until timed (bench/RESULTS.md runs 17, 18 and 19).
  bool decode_chain = false, decode_layer = false;
  // Decode GEMVs whose input needs no transform (wo, w2) read it in the stream instead of copying it
  // into shared memory first (mc::XRow; bench/RESULTS.md runs 17 and 20-23: ~0.06 ms a token of the
  // 7B on an H200); MC_CUDA_X=shared copies it as every other decode GEMV does. The same bits either way.
  bool x_stream = true;
  // The decode attention splits each KV head's keys for about 512 blocks in all (four an SM) where
  // a head then has at most 64 splits, so that at long contexts each block streams half as many
  // tiles one after another as with 256 (bench/RESULTS.md run 26: Mixtral at 16384 positions −0.27
  // to −0.29 ms a token on an H200, short contexts within ±0.02 ms; attention_gqa_window's
  // default_splits); MC_CUDA_ATTN_BLOCKS=256 for about 256 (two an SM) everywhere, as before.
  bool attn_wide = true;
  // MC_CUDA_ATTN_CLUSTER=N: a decode step whose attention sees at most N positions (in a layer) runs
  // it as one kernel, each KV head's splits a thread-block cluster that merges them through
  // distributed shared memory (attention_decode_cluster_kernel; sm_90+), instead of the split kernel
  // and its combine. 0 (off) until timed: bench/RESULTS.md run 27.
  int attn_cluster_positions = 0;
};

/**
 * MC_CUDA_PREFETCH_MB: "N" or "N,M" whole MiB, each capped at the L2's whole MiB. Anything else
 * (empty, signs, spaces, other separators) gives 0 for both, i.e. off, and false (check_environment
 * refuses it before a model is created); unset gives 0 and true.
 */
inline bool parse_prefetch_mib(const char* text, int l2_bytes, int64_t& between, int64_t& across) {
  between = across = 0;
  if (text == nullptr) return true;
  long long v[2] = {0, 0};
  int n = 0;
  const char* c = text;
  for (; n < 2; ++n) {
    if (*c < '0' || *c > '9') return false;
    char* end = nullptr;
    v[n] = std::strtoll(c, &end, 10);
    c = end;
    if (*c == '\0') break;
    if (*c != ',' || n == 1) return false;
    ++c;
  }
  if (n == 0) v[1] = v[0];
  const long long cap = l2_bytes >> 20;
  between = int64_t(std::min(v[0], cap)) << 20;
  across = int64_t(std::min(v[1], cap)) << 20;
  return true;
}

/** A count of plain digits from "0" to `max`; -1 for anything else, `unset` for nullptr. */
inline int parse_count(const char* text, int max, int unset) {
  if (text == nullptr) return unset;
  long long v = 0;
  const char* c = text;
  for (; *c >= '0' && *c <= '9' && v <= max; ++c) v = v * 10 + (*c - '0');
  return c != text && *c == '\0' && v <= max ? int(v) : -1;
}

/**
 * MC_CUDA_A16: the fewest rows of a prefill GEMM from which A is narrowed once, "0" (never) to
 * "65536", plain digits; -1 for anything else. 1 (every GEMM) when unset.
 */
inline int parse_a16_min_rows(const char* text) { return parse_count(text, 65536, 1); }

/** MC_CUDA_ATTN_CLUSTER: positions, "0" (off) to "1073741824", plain digits; -1 for anything else; 0 when unset. */
constexpr int kMaxClusterPositions = 1 << 30;
inline int parse_cluster_positions(const char* text) { return parse_count(text, kMaxClusterPositions, 0); }

/** An MC_CUDA_* switch's value, or nullptr where it is unset or empty (empty is the same as unset). */
inline const char* env_setting(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : nullptr;
}

/**
 * The one line refusing an MC_CUDA_* switch's value (runtime/model.ts turns it into an
 * EnvironmentError): name, the value as typed (cut short, control characters replaced), what the
 * switch accepts, an example. Returns false, for `return refuse_setting(...)`.
 */
inline bool refuse_setting(char* message, size_t size, const char* name, const char* value, const char* accepted, const char* example) {
  char shown[48];
  size_t i = 0;
  for (; value[i] != '\0' && i + 1 < sizeof shown; ++i) shown[i] = (unsigned char)value[i] < 0x20 || value[i] == 0x7f ? '?' : value[i];
  shown[i] = '\0';
  std::snprintf(message, size, "%s=\"%s\" in the environment is not %s; unset it, or set %s", name, shown, accepted, example);
  return false;
}

/**
 * An MC_CUDA_* switch of named values, spelled here only: check_environment refuses anything else,
 * init_device_info reads which one it is (choice()). values[0] is what unset (or empty) means.
 */
struct Choice {
  const char* name;
  const char* values[3];  // nullptr after the last where fewer
  const char* example;    // the refusal's fix
};
inline constexpr Choice kGemmEngine = {"MC_CUDA_GEMM", {"wgmma", "mma", "wgmma-all"}, "one of those"};
inline constexpr Choice kGemmDeep = {"MC_CUDA_GEMM_DEEP", {"1", "0"}, "0 to keep the 4-stage small tile for grids smaller than the GPU"};
inline constexpr Choice kPdl = {"MC_CUDA_PDL", {"gemv", "all", "off"}, "gemv (the default)"};
inline constexpr Choice kPdlTrigger = {"MC_CUDA_PDL_TRIGGER", {"exit", "last-rows"}, "exit (the default)"};
inline constexpr Choice kDecode = {"MC_CUDA_DECODE", {"kernels", "chain", "layer"}, "kernels (the default)"};
inline constexpr Choice kXSource = {"MC_CUDA_X", {"stream", "shared"}, "stream (the default)"};
inline constexpr Choice kAttnBlocks = {"MC_CUDA_ATTN_BLOCKS", {"512", "256"}, "512 (the default)"};

/** The index of the switch's value among its values: 0 where it is unset or empty, -1 where it is none of them. */
inline int choice(const Choice& c) {
  const char* v = env_setting(c.name);
  if (v == nullptr) return 0;
  for (int i = 0; i < 3 && c.values[i] != nullptr; ++i)
    if (std::strcmp(v, c.values[i]) == 0) return i;
  return -1;
}

/**
 * The MC_CUDA_* switches of this process (read by init_device_info): a value that is none of the
 * accepted ones fails with one line ("MC_CUDA_X=...: ...; fix") instead of quietly meaning the
 * default. Checked before anything else of a load (check_device), so no GPU is needed to hear it.
 * An empty value is the same as unset.
 */
inline bool check_environment(char* message, size_t size) {
  for (const Choice* c : {&kGemmEngine, &kGemmDeep, &kPdl, &kPdlTrigger, &kDecode, &kXSource, &kAttnBlocks}) {
    if (choice(*c) >= 0) continue;
    char accepted[96] = "";  // "a, b or c"
    int n = 0;
    while (n < 3 && c->values[n] != nullptr) ++n;
    for (int i = 0; i < n; ++i)
      std::snprintf(accepted + std::strlen(accepted), sizeof accepted - std::strlen(accepted), "%s%s", i == 0 ? "" : i + 1 == n ? " or " : ", ", c->values[i]);
    return refuse_setting(message, size, c->name, env_setting(c->name), accepted, c->example);
  }
  if (const char* v = env_setting("MC_CUDA_A16"); v != nullptr && parse_a16_min_rows(v) < 0)
    return refuse_setting(message, size, "MC_CUDA_A16", v, "a row count from 0 to 65536", "0 to read A through the Op, or N to narrow it from N rows");
  if (const char* v = env_setting("MC_CUDA_ATTN_CLUSTER"); v != nullptr && parse_cluster_positions(v) < 0)
    return refuse_setting(message, size, "MC_CUDA_ATTN_CLUSTER", v, "a position count from 0 to 1073741824", "0 (off, the default) or e.g. 1024");
  int64_t between = 0, across = 0;
  if (const char* v = env_setting("MC_CUDA_PREFETCH_MB"); v != nullptr && !parse_prefetch_mib(v, 1 << 30, between, across))
    return refuse_setting(message, size, "MC_CUDA_PREFETCH_MB", v, "N or N,M whole MiB", "e.g. 8 or 8,24");
  return true;
}
inline DeviceInfo& device_info() {
  static DeviceInfo info;
  return info;
}
/**
 * 1 in the code built for sm_90a (the one with wgmma), 0 in every other build; read by the host from
 * the module the driver loaded for this GPU. One per translation unit (a library is one: model.cu).
 * device_info() is per process: it describes the GPU current at the first prepare(), which with
 * --tp is every rank's GPU (one kind of GPU per machine).
 */
#if defined(MC_WGMMA_ENABLED)
static __device__ int wgmma_built = 1;
#else
static __device__ int wgmma_built = 0;
#endif
inline cudaError_t init_device_info() {
  int device = 0, major = 0, built = 0;
  if (cudaError_t e = cudaGetDevice(&device)) return e;
  if (cudaError_t e = cudaDeviceGetAttribute(&device_info().sms, cudaDevAttrMultiProcessorCount, device)) return e;
  if (cudaError_t e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device)) return e;
  const int pdl = choice(kPdl);  // gemv, all, off (a malformed value is refused by check_environment)
  device_info().pdl = major >= 9 && pdl != 2;
  device_info().pdl_between = device_info().pdl && pdl == 1;
  device_info().pdl_early_trigger = device_info().pdl && choice(kPdlTrigger) == 1;  // exit, last-rows
  device_info().decode_chain = choice(kDecode) >= 1;                                 // kernels, chain, layer
  device_info().decode_layer = choice(kDecode) == 2;
  device_info().x_stream = choice(kXSource) == 0;                                     // stream, shared
  device_info().attn_wide = choice(kAttnBlocks) == 0;                                 // 512, 256
  // Clusters exist from sm_90 (check_device refuses the setting on older GPUs before this runs).
  device_info().attn_cluster_positions = major >= 9 ? std::max(0, parse_cluster_positions(env_setting("MC_CUDA_ATTN_CLUSTER"))) : 0;
  if (cudaError_t e = cudaMemcpyFromSymbol(&built, wgmma_built, sizeof built)) return e;
  const int engine = choice(kGemmEngine);  // wgmma, mma, wgmma-all
  device_info().wgmma_built = built == 1;
  device_info().wgmma = built == 1 && engine != 1;
  device_info().wgmma_all = device_info().wgmma && engine == 2;
  device_info().a16_min_rows = std::max(0, parse_a16_min_rows(env_setting("MC_CUDA_A16")));
  device_info().deep_small_tile = choice(kGemmDeep) != 1;  // 1, 0
  // Off until measured: bench/RESULTS.md run 9. (A malformed value is refused by check_environment.)
  int l2 = 0;
  if (cudaError_t e = cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device)) return e;
  parse_prefetch_mib(env_setting("MC_CUDA_PREFETCH_MB"), l2, device_info().l2_prefetch_bytes, device_info().l2_prefetch_attention_bytes);
  return cudaSuccess;
}

/** A launch of `grid` blocks of `block` threads and `smem` bytes of dynamic shared memory on `s`, with `n` attributes from `attrs`. */
inline cudaLaunchConfig_t launch_config(dim3 grid, dim3 block, size_t smem, cudaStream_t s, cudaLaunchAttribute* attrs = nullptr, unsigned n = 0) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = s;
  config.attrs = attrs;
  config.numAttrs = n;
  return config;
}

/** The attribute that makes a launch's blocks clusters of `x` blocks along x (sm_90+). */
inline cudaLaunchAttribute cluster_attribute(unsigned x) {
  cudaLaunchAttribute attr = {};
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = x;
  attr.val.clusterDim.y = 1;
  attr.val.clusterDim.z = 1;
  return attr;
}

/**
 * Launches a kernel, with programmatic dependent launch where `pdl` (and the GPU has it, sm_90+): it
 * may then start while the previous kernel drains, so it must call wait_for_previous_kernel()
 * before it reads or writes activations.
 */
template <typename... Params, typename... Args>
inline cudaError_t launch_pdl(bool pdl, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, Args... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  const cudaLaunchConfig_t config = launch_config(grid, block, smem, s, attr, pdl && device_info().pdl ? 1 : 0);
  return cudaLaunchKernelEx(&config, kernel, args...);
}

/**
 * A launch whose blocks form clusters of `cluster_x` blocks along x (sm_90+: they run at once and
 * reach each other's shared memory), without PDL: the emulator checks the PDL rule one block at a
 * time, which a cluster's blocks are not.
 */
template <typename... Params, typename... Args>
inline cudaError_t launch_cluster(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, unsigned cluster_x, cudaStream_t s, Args... args) {
  cudaLaunchAttribute attr[1] = {cluster_attribute(cluster_x)};
  const cudaLaunchConfig_t config = launch_config(grid, block, smem, s, attr, 1);
  return cudaLaunchKernelEx(&config, kernel, args...);
}

/** A decode GEMV's launch: with PDL wherever the GPU has it (MC_CUDA_PDL=off aside). */
template <typename... Params, typename... Args>
inline cudaError_t launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, Args... args) {
  return launch_pdl(true, kernel, grid, block, smem, s, args...);
}

/**
 * A small kernel between the decode GEMVs (the decode attention and its combine, the MoE routing):
 * with PDL only under MC_CUDA_PDL=all. By default they wait for their predecessor in full: with
 * PDL and early triggers everywhere decode was slower (bench/RESULTS.md runs 3 and 4); PDL alone,
 * with the default trigger at exit, had not been timed (run 14). They call wait_for_previous_kernel()
 * first either way (a no-op without the attribute).
 */
template <typename... Params, typename... Args>
inline cudaError_t launch_between(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, Args... args) {
  return launch_pdl(device_info().pdl_between, kernel, grid, block, smem, s, args...);
}

}  // namespace mc
