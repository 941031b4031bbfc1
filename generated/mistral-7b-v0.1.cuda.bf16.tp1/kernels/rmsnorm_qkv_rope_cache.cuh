// rmsnorm_qkv_rope_cache: RMSNorm (attention_norm) → fused Q/K/V projection → RoPE on interleaved pairs (Q and K) → K/V write into the rolling KV cache (slot = position mod 4607)
// Rendered from templates/cuda/rmsnorm_qkv_rope_cache.cuh.hbs for mistral-7b-v0.1.cuda.bf16.tp1; constants from the plan.
#pragma once
namespace rmsnorm_qkv_rope_cache {
constexpr int DIM = 4096;                    // dim from params.json
constexpr int HEAD_DIM = 128;          // head_dim from params.json
constexpr int N_HEADS = 32;      // query heads of this rank
constexpr int N_KV_HEADS = 8;// KV heads of this rank
constexpr int Q_DIM = N_HEADS * HEAD_DIM;
constexpr int KV_DIM = N_KV_HEADS * HEAD_DIM;
constexpr int QKV = Q_DIM + 2 * KV_DIM;             // rows of wq|wk|wv, back to back in the device arena
constexpr float EPS = 0.00001;           // norm_eps from params.json
static_assert(HEAD_DIM % 2 == 0, "RoPE rotates pairs");

/**
 * Columns n, n + 1 (n even) of token t's q|k|v row: RoPE on the pair (x[2i], x[2i+1]) of a query or
 * key head, then q to its buffer and k, v into the cache at slot = position mod KV_SLOTS.
 */
template <int KV_SLOTS>
struct Epilogue {
  float* q;                   // [T, Q_DIM] f32
  KV* k_cache;                // [KV_SLOTS, KV_DIM]
  KV* v_cache;                // [KV_SLOTS, KV_DIM]
  const int32_t* pos0;        // [1] position of token 0
  const double* inv_freq;     // [HEAD_DIM / 2] theta^(-2i/head_dim)
  __device__ __forceinline__ void operator()(int t, int n, float a, float b) const {
    const int32_t pos = *pos0 + t;
    if (n < Q_DIM + KV_DIM) {
      float c, s;
      mc::rope_cos_sin(pos, inv_freq[(n % HEAD_DIM) / 2], c, s);
      const float x = a, y = b;
      a = x * c - y * s;
      b = x * s + y * c;
    }
    if (n < Q_DIM) {
      q[int64_t(t) * Q_DIM + n] = a;
      q[int64_t(t) * Q_DIM + n + 1] = b;
      return;
    }
    const int64_t slot = pos % KV_SLOTS;
    KV* dst = n < Q_DIM + KV_DIM ? k_cache + slot * KV_DIM + (n - Q_DIM) : v_cache + slot * KV_DIM + (n - Q_DIM - KV_DIM);
    dst[0] = mc::from_f32<KV>(a);
    dst[1] = mc::from_f32<KV>(b);
  }
};

/** Decode: x = RMSNorm(residual[t]) in shared memory; each warp streams 2 rows (one RoPE pair). */
template <int KV_SLOTS>
struct Decode {
  using W = ::W;
  static constexpr int K = DIM, ROWS = 2, NSRC = 1, WARPS = 8, GROUPS = QKV / 2;
  static constexpr bool EARLY_ROWS = true;  // weights only: streamed before waiting for the previous kernel
  const float* residual;      // [T, DIM] f32
  const W* norm;              // [DIM] attention_norm
  const W* wqkv;              // [QKV, DIM]
  Epilogue<KV_SLOTS> epi;
  __device__ bool load_x(int t, float* xs) const { mc::rmsnorm_row<DIM>(residual + int64_t(t) * DIM, norm, EPS, xs); return true; }
  __device__ void rows(int, int g, int, const W* (&ptr)[ROWS], float&) const { mc::consecutive_rows<K>(wqkv, 2 * g, QKV, ptr); }
  __device__ void epilogue(int t, int g, const float (&acc)[ROWS]) const { epi(t, 2 * g, acc[0], acc[1]); }
};

/** Prefill: tensor-core GEMM whose A rows are the normalized residual rows (mc::RowNorm). */
template <int KV_SLOTS>
struct Prefill {
  using W = ::W;
  static constexpr int K = DIM;
  static constexpr bool PAIRED = false;
  mc::RowNorm<DIM, W> row_norm;  // RMSNorm(residual) * attention_norm (rstd: gemm())
  const W* wqkv;              // [QKV, DIM]
  int T;
  Epilogue<KV_SLOTS> epi;
  __device__ int m_count(int) const { return T; }
  __device__ int n_count() const { return QKV; }
  __device__ float4 a(int, int m, int k) const { return row_norm.a(m, k); }
  __device__ const W* b_row(int, int, int n) const { return wqkv + int64_t(n) * DIM; }
  __device__ void store(int, int m, int n, float v0, float v1) const { epi(m, n, v0, v1); }
};

/** The decode GEMV's Op: what launch() runs for one token, and a link of a decode chain (mc::gemv_chain). */
template <int KV_SLOTS>
inline Decode<KV_SLOTS> decode(const float* residual, const int32_t* pos0, const W* norm, const W* wqkv, const double* inv_freq, float* q, KV* k_cache, KV* v_cache) {
  return {residual, norm, wqkv, Epilogue<KV_SLOTS>{q, k_cache, v_cache, pos0, inv_freq}};
}

template <int KV_SLOTS>
inline cudaError_t launch(const float* residual, int T, const int32_t* pos0, const W* norm, const W* wqkv, const double* inv_freq,
                          float* rstd /*[T] scratch*/, uint16_t* a16 /*[T, DIM] scratch*/, float* q, KV* k_cache, KV* v_cache, mc::L2Next next, cudaStream_t s) {
  const Epilogue<KV_SLOTS> epi{q, k_cache, v_cache, pos0, inv_freq};
  if constexpr (mc::kTensorCores<W>) {
    if (T > 1) return mc::gemm(Prefill<KV_SLOTS>{mc::RowNorm<DIM, W>{residual, norm, EPS, rstd}, wqkv, T, epi}, 1, T, QKV, s, a16);
  }
  return mc::gemv(decode<KV_SLOTS>(residual, pos0, norm, wqkv, inv_freq, q, k_cache, v_cache), T, s, next);
}
template <int KV_SLOTS>
inline cudaError_t prepare() {
  if (cudaError_t e = mc::gemv_prepare<Decode<KV_SLOTS>>()) return e;
  return mc::gemm_prepare<Prefill<KV_SLOTS>>();
}
}  // namespace rmsnorm_qkv_rope_cache
