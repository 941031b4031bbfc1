// Checks every fused CPU kernel (templates/cpu/<kernel>.hpp.hbs, as rendered for one config, dtype
// and TP size) on its own against a float64 reference written here from the formulas, on fresh
// random inputs at several token counts, for every TP rank's weight slice:
//   RMSNorm  x · (mean(x²) + eps)^-½ · w
//   RoPE     interleaved pairs (x[2i], x[2i+1]) of each head turned by pos · theta^(-2i/head_dim)
//   attention softmax(q·kᵀ / √head_dim) · v over the keys at positions (p - window, p] (all of [0, p]
//            without a window), each KV head serving its group of query heads
//   SwiGLU   silu(w1·x) ⊙ (w3·x), then w2 of that, added to the residual
//   MoE      the top-k gate logits (ties to the lower expert), softmax over those k only
// Outputs start as NaN (-1 for indices) and in-place residuals as random values, so an element the
// kernel does not write fails; weights are the checkpoint's whole tensor with the other ranks'
// parts NaN, so a kernel that reads outside its slice fails too; the KV cache's other slots must
// keep their bits.
//
// Built by test/cpu-fused/fused.test.ts with the flags of a model build against the rendered
// sources (kernels/*.hpp, mc_cpu.hpp, mc_abi.h) and fused_config.hpp, which it writes from the plan
// (weight types, weight slices per rank, each distinct layer's window and ring length).
// Run: check_fused [seed]; without a seed it draws one from std::random_device. Prints a header line
// with the seed, one line per case `<case> <error> <tolerance> <ok|FAIL>`, then `done, <n> failed`.
// The error is the relative L2 error against float64, or for exact checks (tolerance 0) the number
// of elements that differ.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "fused_config.hpp"  // W, KV, mc_cpu.hpp, namespace plan, MC_LAYER_KINDS

#include "kernels/attention_gqa_window.hpp"
#include "kernels/embedding_lookup.hpp"
#include "kernels/rmsnorm_output.hpp"
#include "kernels/rmsnorm_qkv_rope_cache.hpp"
#include "kernels/wo_residual.hpp"
#if __has_include("kernels/rmsnorm_w13_swiglu.hpp")
#define MC_DENSE 1
#include "kernels/rmsnorm_w13_swiglu.hpp"
#include "kernels/w2_residual.hpp"
#else
#define MC_DENSE 0
#include "kernels/moe_group_by_expert.hpp"
#include "kernels/moe_w13_swiglu.hpp"
#include "kernels/moe_w2_combine_residual.hpp"
#include "kernels/rmsnorm_moe_gate_topk_softmax.hpp"
#endif

namespace {
using Vec = std::vector<double>;

// ---- tolerances ----------------------------------------------------------------------------------
// The reference reads the very values the kernels read (bf16 weights and KV entries as stored), so
// what is left is the kernels' own rounding:
//  - float32 arithmetic on exact inputs (f32 weights; the decode GEMV, which widens bf16 exactly;
//    RMSNorm, RoPE, attention, routing): sums of at most a few hundred f32 products, relative error
//    ~1e-7 (observed below 1e-6), so 1e-5 leaves room for the summation order and nothing for a bug;
//  - a value rounded to 16 bits: the prefill GEMM on AVX512_BF16 rounds x to bf16 (2^-9 relative an
//    element, ~2e-3 relative L2 of a sum of random terms) and a 16-bit KV cache stores k and v rounded
//    (2^-9 relative, ~1.5e-3 L2): 1e-2, the tolerance the README gives bf16 logits.
constexpr double kF32 = 1e-5, k16Bit = 1e-2;
#if defined(MC_AVX512)
constexpr bool kPrefillRoundsX = mc::avx512::kBf16Dot<W>;
constexpr int kGemmMinTokens = mc::avx512::kGemmMinTokens;
#else
constexpr bool kPrefillRoundsX = false;  // the portable loops multiply in f32
constexpr int kGemmMinTokens = 1;
#endif
/** A projection of `rows` tokens in one call: the prefill GEMM may round x to bf16, the decode GEMV does not. */
double proj_tol(int rows) { return kPrefillRoundsX && rows >= kGemmMinTokens ? k16Bit : kF32; }
/** Values stored in the KV cache's type (after a projection of `rows` tokens). */
double stored_tol(int rows) { return std::is_same_v<KV, float> ? proj_tol(rows) : k16Bit; }

// ---- reporting -----------------------------------------------------------------------------------
int failures = 0;

void report(const std::string& name, double err, double tol) {
  const bool ok = err <= tol;  // NaN never passes
  failures += !ok;
  std::printf("%s %.3e %.0e %s\n", name.c_str(), err, tol, ok ? "ok" : "FAIL");
}

/** Relative L2 error of got against ref; an element that is not finite (NaN poison left unwritten) makes it infinite. */
double rel_l2(const Vec& ref, const Vec& got) {
  if (ref.size() != got.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (got[i] - ref[i]) * (got[i] - ref[i]), den += ref[i] * ref[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1));
}

template <typename... A>
std::string name(const char* format, A... args) {
  char buf[256];
  std::snprintf(buf, sizeof buf, format, args...);
  return buf;
}

// ---- random inputs -------------------------------------------------------------------------------
std::mt19937_64 rng;
double normal() { return std::normal_distribution<double>(0.0, 1.0)(rng); }
[[maybe_unused]] double uniform() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng); }
int uniform_int(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }
std::vector<float> normals(size_t n) {
  std::vector<float> v(n);
  for (auto& x : v) x = float(normal());
  return v;
}
Vec widen(const std::vector<float>& v) { return Vec(v.begin(), v.end()); }
template <typename T>
bool same_bits(const T& a, const T& b) { return std::memcmp(&a, &b, sizeof(T)) == 0; }

/**
 * A checkpoint tensor in memory and one rank's view of it (plan::Slice: as runtime/checkpoint.ts
 * makes it, a row-parallel slice keeping the full row stride). The slice holds random values in the
 * weight type; the rest of the tensor (other ranks' rows or columns) is NaN. The tensor starts 0-15
 * elements into its buffer: a mapped safetensors tensor may start anywhere in a cache line.
 */
struct Weight {
  std::vector<W> buf;
  const W* base;
  plan::Slice s;
  Weight(const plan::Tensor& t, int rank, double scale, double center = 0.0) : s(t.rank[rank]) {
    const int pad = uniform_int(0, 15);
    buf.assign(size_t(t.rows * t.cols + pad), mc::from_f32<W>(NAN));
    base = buf.data() + pad;
    for (int64_t r = 0; r < s.rows; ++r)
      for (int64_t c = 0; c < s.cols; ++c) buf[size_t(pad + s.first + r * s.row_stride + c)] = mc::from_f32<W>(float(center + scale * normal()));
  }
  mc_weight view() const { return mc_weight{base + s.first, s.row_stride, s.rows, s.cols}; }
  /** Element (r, c) of the slice, as the kernel reads it. */
  double at(int64_t r, int64_t c) const { return mc::to_f32(base[s.first + r * s.row_stride + c]); }
  /** Row b of the slice becomes a copy of row a (gate ties). */
  void copy_row(int64_t a, int64_t b) {
    W* p = const_cast<W*>(base) + s.first;
    std::copy_n(p + a * s.row_stride, s.cols, p + b * s.row_stride);
  }
};

// ---- float64 pieces ------------------------------------------------------------------------------
/** x · (mean(x²) + eps)^-½ · w for one row of n. */
Vec rmsnorm(const float* x, int n, const Weight& w, double eps) {
  double ss = 0;
  for (int i = 0; i < n; ++i) ss += double(x[i]) * x[i];
  const double scale = 1.0 / std::sqrt(ss / n + eps);
  Vec y(n);
  for (int i = 0; i < n; ++i) y[i] = x[i] * scale * w.at(i, 0);
  return y;
}
/** Σ_k x[k] · w(row, k). */
double dot(const double* x, const Weight& w, int64_t row, int K) {
  double acc = 0;
  for (int k = 0; k < K; ++k) acc += x[k] * w.at(row, k);
  return acc;
}
double silu(double x) { return x / (1.0 + std::exp(-x)); }
/** RoPE of one head at position pos: pair (x[2i], x[2i+1]) turned by pos · theta^(-2i/head_dim). */
void rope(double* head, int head_dim, int64_t pos) {
  for (int i = 0; i < head_dim / 2; ++i) {
    const double a = double(pos) * std::pow(plan::ROPE_THETA, -2.0 * i / head_dim), c = std::cos(a), s = std::sin(a);
    const double x0 = head[2 * i], x1 = head[2 * i + 1];
    head[2 * i] = x0 * c - x1 * s, head[2 * i + 1] = x0 * s + x1 * c;
  }
}

// ---- embedding_lookup ----------------------------------------------------------------------------
namespace E = embedding_lookup;
static_assert(plan::TOK_EMBEDDINGS.rank[0].rows == E::VOCAB_LOCAL && plan::TOK_EMBEDDINGS.rank[0].cols == E::DIM);

void check_embedding(int T, int rank) {
  const Weight emb(plan::TOK_EMBEDDINGS, rank, 1.0);
  std::vector<int32_t> tokens(T);
  for (auto& t : tokens) t = uniform_int(0, plan::VOCAB - 1);  // at TP > 1 most are another rank's
  tokens[0] = plan::VOCAB_START[rank] + uniform_int(0, E::VOCAB_LOCAL - 1);  // at least one of this rank's
  std::vector<float> out(size_t(T) * E::DIM, NAN);
  E::run(tokens.data(), T, plan::VOCAB_START[rank], emb.view(), out.data());
  int64_t wrong = 0;
  for (int t = 0; t < T; ++t) {
    const int64_t local = tokens[t] - plan::VOCAB_START[rank];
    for (int i = 0; i < E::DIM; ++i) {
      const double ref = local >= 0 && local < E::VOCAB_LOCAL ? emb.at(local, i) : 0.0;
      wrong += !(out[size_t(t) * E::DIM + i] == ref);  // exact: a copy, or zeros
    }
  }
  report(name("embedding_lookup/rows/rank%d/T%d", rank, T), double(wrong), 0);
}

// ---- rmsnorm_qkv_rope_cache ----------------------------------------------------------------------
namespace Q = rmsnorm_qkv_rope_cache;
static_assert(plan::WQ.rank[0].rows == Q::Q_DIM && plan::WQ.rank[0].cols == Q::DIM);
static_assert(plan::WK.rank[0].rows == Q::KV_DIM && plan::WV.rank[0].rows == Q::KV_DIM);

/** T tokens at positions start.. into a ring of KV_SLOTS slots that holds earlier (random) entries. */
template <int KV_SLOTS>
void check_qkv(int window, int T, int start, int rank) {
  constexpr int DIM = Q::DIM, HD = Q::HEAD_DIM, Q_DIM = Q::Q_DIM, KV_DIM = Q::KV_DIM, QKV = Q_DIM + 2 * KV_DIM;
  using Keys = mc::KeyBlocks<HD, KV_SLOTS>;
  const Weight norm(plan::ATTENTION_NORM, rank, 0.2, 1.0);
  const Weight wq(plan::WQ, rank, 1 / std::sqrt(double(DIM))), wk(plan::WK, rank, 1 / std::sqrt(double(DIM))),
      wv(plan::WV, rank, 1 / std::sqrt(double(DIM)));
  const std::vector<float> residual = normals(size_t(T) * DIM);
  std::vector<int32_t> positions(T);
  std::iota(positions.begin(), positions.end(), start);
  const mc::Rope<HD> rope_table{plan::ROPE_THETA};
  std::vector<float> xn(size_t(T) * DIM, NAN), qkv(size_t(T) * QKV, NAN), q(size_t(T) * Q_DIM, NAN);
  std::vector<KV> k_cache(KV_SLOTS * size_t(KV_DIM)), v_cache(KV_SLOTS * size_t(KV_DIM));
  for (auto& v : k_cache) v = mc::from_f32<KV>(float(normal()));
  for (auto& v : v_cache) v = mc::from_f32<KV>(float(normal()));
  const std::vector<KV> k_before = k_cache, v_before = v_cache;
  Q::run<KV_SLOTS>(residual.data(), T, positions.data(), norm.view(), wq.view(), wk.view(), wv.view(), rope_table, xn.data(), qkv.data(), q.data(),
                   k_cache.data(), v_cache.data());

  Vec q_ref, k_ref, v_ref, q_got, k_got, v_got;
  std::vector<bool> written(KV_SLOTS, false);
  for (int t = 0; t < T; ++t) {
    const Vec x = rmsnorm(residual.data() + size_t(t) * DIM, DIM, norm, Q::EPS);
    Vec y(QKV);
    for (int n = 0; n < Q_DIM; ++n) y[n] = dot(x.data(), wq, n, DIM);
    for (int n = 0; n < KV_DIM; ++n) y[Q_DIM + n] = dot(x.data(), wk, n, DIM), y[Q_DIM + KV_DIM + n] = dot(x.data(), wv, n, DIM);
    for (int h = 0; h < (Q_DIM + KV_DIM) / HD; ++h) rope(y.data() + h * HD, HD, positions[t]);  // query heads, then key heads
    q_ref.insert(q_ref.end(), y.begin(), y.begin() + Q_DIM);
    k_ref.insert(k_ref.end(), y.begin() + Q_DIM, y.begin() + Q_DIM + KV_DIM);
    v_ref.insert(v_ref.end(), y.begin() + Q_DIM + KV_DIM, y.end());
    const int slot = positions[t] % KV_SLOTS;
    written[slot] = true;
    for (int i = 0; i < KV_DIM; ++i) {
      k_got.push_back(mc::to_f32(k_cache[size_t(Keys::index(i / HD, slot, i % HD))]));
      v_got.push_back(mc::to_f32(v_cache[size_t(slot) * KV_DIM + i]));
    }
  }
  int64_t changed = 0;  // slots no token of this call maps to keep their bits
  for (int slot = 0; slot < KV_SLOTS; ++slot) {
    if (written[slot]) continue;
    for (int i = 0; i < KV_DIM; ++i) {
      const size_t k = size_t(Keys::index(i / HD, slot, i % HD)), v = size_t(slot) * KV_DIM + i;
      changed += !same_bits(k_cache[k], k_before[k]) + !same_bits(v_cache[v], v_before[v]);
    }
  }
  const std::string where = name("w%d/slots%d/rank%d/start%d/T%d", window, KV_SLOTS, rank, start, T);
  report("rmsnorm_qkv_rope_cache/q/" + where, rel_l2(q_ref, widen(q)), proj_tol(T));
  report("rmsnorm_qkv_rope_cache/k_cache_slot/" + where, rel_l2(k_ref, k_got), stored_tol(T));
  report("rmsnorm_qkv_rope_cache/v_cache_slot/" + where, rel_l2(v_ref, v_got), stored_tol(T));
  report("rmsnorm_qkv_rope_cache/other_slots_kept/" + where, double(changed), 0);
}

// ---- attention_gqa_window ------------------------------------------------------------------------
namespace A = attention_gqa_window;

/** Whether T queries from `start` find every key they see still in a ring of `slots` (as the plan sizes rings). */
bool keys_in_ring(int window, int slots, int T, int start) {
  const int oldest = window > 0 ? std::max(0, start - window + 1) : 0;
  return start + T - 1 - oldest < slots;
}

/**
 * T queries at positions start.. over a cache that holds positions 0 .. start + T - 1 (each at slot
 * pos % KV_SLOTS, later positions replacing earlier ones; slots never reached are NaN, so reading
 * one fails the case).
 */
template <int WINDOW, int KV_SLOTS>
void check_attention(int T, int start) {
  constexpr int HD = A::HEAD_DIM, KV_DIM = A::KV_DIM, Q_DIM = A::N_HEADS * HD;
  using Keys = mc::KeyBlocks<HD, KV_SLOTS>;
  const int n_pos = start + T, first = std::max(0, n_pos - KV_SLOTS);  // positions before `first` are all overwritten
  std::vector<float> keys(size_t(n_pos - first) * KV_DIM), values(keys.size());  // position p at row p - first, as stored
  for (auto& v : keys) v = mc::to_f32(mc::from_f32<KV>(float(normal())));
  for (auto& v : values) v = mc::to_f32(mc::from_f32<KV>(float(normal())));
  std::vector<KV> k_cache(KV_SLOTS * size_t(KV_DIM), mc::from_f32<KV>(NAN)), v_cache(k_cache);
  for (int p = first; p < n_pos; ++p)
    for (int i = 0; i < KV_DIM; ++i) {
      k_cache[size_t(Keys::index(i / HD, p % KV_SLOTS, i % HD))] = mc::from_f32<KV>(keys[size_t(p - first) * KV_DIM + i]);
      v_cache[size_t(p % KV_SLOTS) * KV_DIM + i] = mc::from_f32<KV>(values[size_t(p - first) * KV_DIM + i]);
    }
  const std::vector<float> q = normals(size_t(T) * Q_DIM);
  std::vector<int32_t> positions(T);
  std::iota(positions.begin(), positions.end(), start);
  std::vector<float> out(size_t(T) * Q_DIM, NAN), scratch(size_t(omp_get_max_threads()) * A::GROUP * KV_SLOTS, NAN);
  A::run<WINDOW, KV_SLOTS>(q.data(), T, positions.data(), k_cache.data(), v_cache.data(), out.data(), scratch.data());

  Vec ref(size_t(T) * Q_DIM);
  for (int t = 0; t < T; ++t) {
    const int p = start + t, lo = WINDOW > 0 ? std::max(0, p - WINDOW + 1) : 0;
    for (int h = 0; h < A::N_HEADS; ++h) {
      const int g = h / A::GROUP;  // the KV head of query head h
      Vec s(p - lo + 1);
      double mx = -INFINITY, sum = 0;
      for (int j = lo; j <= p; ++j) {
        double d = 0;
        for (int i = 0; i < HD; ++i) d += double(q[size_t(t) * Q_DIM + h * HD + i]) * keys[size_t(j - first) * KV_DIM + g * HD + i];
        mx = std::max(mx, s[j - lo] = d / std::sqrt(double(HD)));
      }
      for (double& v : s) sum += (v = std::exp(v - mx));
      for (int i = 0; i < HD; ++i) {
        double o = 0;
        for (int j = lo; j <= p; ++j) o += s[j - lo] * values[size_t(j - first) * KV_DIM + g * HD + i];
        ref[size_t(t) * Q_DIM + h * HD + i] = o / sum;
      }
    }
  }
  report(name("attention_gqa_window/out/w%d/slots%d/start%d/T%d", WINDOW, KV_SLOTS, start, T), rel_l2(ref, widen(out)), kF32);
}

// ---- wo_residual, w2_residual --------------------------------------------------------------------
/** residual += x · wᵀ (run: the kernel's run), the residual starting from random values. */
template <int DIM, int IN, typename Run>
void check_residual_projection(const char* kernel, const plan::Tensor& tensor, int T, int rank, Run run) {
  const Weight w(tensor, rank, 1 / std::sqrt(double(IN)));
  const std::vector<float> x = normals(size_t(T) * IN), before = normals(size_t(T) * DIM);
  std::vector<float> residual = before;
  run(x.data(), T, w.view(), residual.data());
  Vec ref(size_t(T) * DIM);
  for (int t = 0; t < T; ++t) {
    const Vec xd(x.begin() + size_t(t) * IN, x.begin() + size_t(t + 1) * IN);
    for (int n = 0; n < DIM; ++n) ref[size_t(t) * DIM + n] = before[size_t(t) * DIM + n] + dot(xd.data(), w, n, IN);
  }
  report(name("%s/residual/rank%d/T%d", kernel, rank, T), rel_l2(ref, widen(residual)), proj_tol(T));
}

namespace O = wo_residual;
static_assert(plan::WO.rank[0].rows == O::DIM && plan::WO.rank[0].cols == O::IN);
void check_wo(int T, int rank) { check_residual_projection<O::DIM, O::IN>("wo_residual", plan::WO, T, rank, O::run); }

// ---- rmsnorm_output ------------------------------------------------------------------------------
namespace L = rmsnorm_output;
static_assert(plan::OUTPUT.rank[0].rows == L::VOCAB_LOCAL && plan::OUTPUT.rank[0].cols == L::DIM);

/** Logits of residual rows first .. first + T (the driver passes first = n - 1 for the last token only). */
void check_output(int T, int rank) {
  const int first = uniform_int(0, 3);
  const Weight norm(plan::NORM, rank, 0.2, 1.0), out(plan::OUTPUT, rank, 1 / std::sqrt(double(L::DIM)));
  const std::vector<float> residual = normals(size_t(first + T) * L::DIM);
  std::vector<float> xn(size_t(T) * L::DIM, NAN), logits(size_t(T) * L::VOCAB_LOCAL, NAN);
  L::run(residual.data(), first, T, norm.view(), out.view(), xn.data(), logits.data());
  Vec ref(logits.size());
  for (int t = 0; t < T; ++t) {
    const Vec x = rmsnorm(residual.data() + size_t(first + t) * L::DIM, L::DIM, norm, L::EPS);
    for (int n = 0; n < L::VOCAB_LOCAL; ++n) ref[size_t(t) * L::VOCAB_LOCAL + n] = dot(x.data(), out, n, L::DIM);
  }
  report(name("rmsnorm_output/logits/rank%d/first%d/T%d", rank, first, T), rel_l2(ref, widen(logits)), proj_tol(T));
}

#if MC_DENSE
// ---- rmsnorm_w13_swiglu --------------------------------------------------------------------------
namespace F = rmsnorm_w13_swiglu;
static_assert(plan::W1.rank[0].rows == F::HIDDEN && plan::W3.rank[0].rows == F::HIDDEN && plan::W1.rank[0].cols == F::DIM);

void check_w13(int T, int rank) {
  const Weight norm(plan::FFN_NORM, rank, 0.2, 1.0), w1(plan::W1, rank, 1 / std::sqrt(double(F::DIM))), w3(plan::W3, rank, 1 / std::sqrt(double(F::DIM)));
  const std::vector<float> residual = normals(size_t(T) * F::DIM);
  std::vector<float> xn(size_t(T) * F::DIM, NAN), hidden(size_t(T) * F::HIDDEN, NAN);
  F::run(residual.data(), T, norm.view(), w1.view(), w3.view(), xn.data(), hidden.data());
  Vec ref(hidden.size());
  for (int t = 0; t < T; ++t) {
    const Vec x = rmsnorm(residual.data() + size_t(t) * F::DIM, F::DIM, norm, F::EPS);
    for (int u = 0; u < F::HIDDEN; ++u) ref[size_t(t) * F::HIDDEN + u] = silu(dot(x.data(), w1, u, F::DIM)) * dot(x.data(), w3, u, F::DIM);
  }
  report(name("rmsnorm_w13_swiglu/hidden/rank%d/T%d", rank, T), rel_l2(ref, widen(hidden)), proj_tol(T));
}

// ---- w2_residual ---------------------------------------------------------------------------------
namespace D = w2_residual;
static_assert(plan::W2.rank[0].rows == D::DIM && plan::W2.rank[0].cols == D::HIDDEN);
void check_w2(int T, int rank) { check_residual_projection<D::DIM, D::HIDDEN>("w2_residual", plan::W2, T, rank, D::run); }

#else
// ---- rmsnorm_moe_gate_topk_softmax ---------------------------------------------------------------
namespace G = rmsnorm_moe_gate_topk_softmax;
static_assert(plan::GATE.rank[0].rows == G::EXPERTS && plan::GATE.rank[0].cols == G::DIM);

/**
 * With `ties`, one gate row is a copy of another, so two experts' logits are equal (bit for bit in the
 * kernel, whose dot product sums the same values in the same order: the rows are DIM elements apart,
 * 256 or 512 bytes in the tiny MoE configs, so no alignment peeling tells them apart; exactly in
 * float64): where one of the two is chosen, it must be the lower index first.
 * Elsewhere, the order of experts whose float64 logits are within 1e-5 of each other is not judged
 * (float32 may order them either way); the weights are then checked for the experts the kernel chose.
 */
void check_gate(int T, int rank, bool ties) {
  constexpr int E_ = G::EXPERTS, K = G::TOP_K;
  const Weight norm(plan::FFN_NORM, rank, 0.2, 1.0);
  Weight gate(plan::GATE, rank, 1 / std::sqrt(double(G::DIM)));
  if (ties) {
    const int a = uniform_int(0, E_ - 2);
    gate.copy_row(a, uniform_int(a + 1, E_ - 1));
  }
  const std::vector<float> residual = normals(size_t(T) * G::DIM);
  std::vector<float> normed(size_t(T) * G::DIM, NAN), weight(size_t(T) * K, NAN);
  std::vector<int32_t> expert(size_t(T) * K, -1);
  G::run(residual.data(), T, norm.view(), gate.view(), normed.data(), expert.data(), weight.data());

  Vec normed_ref, weight_ref, weight_got;
  int64_t wrong_experts = 0;
  for (int t = 0; t < T; ++t) {
    const Vec x = rmsnorm(residual.data() + size_t(t) * G::DIM, G::DIM, norm, G::EPS);
    normed_ref.insert(normed_ref.end(), x.begin(), x.end());
    Vec logit(E_);
    double scale = 0;
    for (int e = 0; e < E_; ++e) logit[e] = dot(x.data(), gate, e, G::DIM), scale = std::max(scale, std::abs(logit[e]));
    const double near = 1e-5 * (1 + scale);
    std::vector<bool> taken(E_, false);
    Vec chosen;
    for (int k = 0; k < K; ++k) {
      const int e = expert[size_t(t) * K + k];
      if (e < 0 || e >= E_ || taken[e]) {
        ++wrong_experts;
        continue;
      }
      for (int o = 0; o < E_; ++o)  // no expert left out is clearly larger, or equal with a lower index
        if (!taken[o] && o != e && (logit[o] > logit[e] + near || (logit[o] == logit[e] && o < e))) {
          ++wrong_experts;
          break;
        }
      taken[e] = true;
      chosen.push_back(logit[e]);
      weight_got.push_back(weight[size_t(t) * K + k]);
    }
    if (chosen.empty()) continue;
    const double top = *std::max_element(chosen.begin(), chosen.end());
    double sum = 0;
    for (double& v : chosen) sum += (v = std::exp(v - top));
    for (double v : chosen) weight_ref.push_back(v / sum);
  }
  const std::string where = name("rank%d/T%d%s", rank, T, ties ? "/ties" : "");
  report("rmsnorm_moe_gate_topk_softmax/normed/" + where, rel_l2(normed_ref, widen(normed)), kF32);
  report("rmsnorm_moe_gate_topk_softmax/experts/" + where, double(wrong_experts), 0);
  report("rmsnorm_moe_gate_topk_softmax/weights/" + where, wrong_experts > 0 ? INFINITY : rel_l2(weight_ref, Vec(weight_got.begin(), weight_got.end())), kF32);
}

// ---- routing for the expert kernels ----------------------------------------------------------------
/**
 * TOP_K distinct experts per token, drawn skewed toward the low indices so that some experts get
 * many tokens (the prefill GEMM) and some none (skipped); the pairs grouped by expert as
 * moe_group_by_expert's contract says, each expert's rows in a random order.
 */
struct Routing {
  std::vector<int32_t> expert, offsets, rows;
  std::vector<float> weight;
  int most = 0;  // the most rows of one expert
  Routing(int T, int experts, int K) : offsets(experts + 1, 0) {
    for (int t = 0; t < T; ++t) {
      std::vector<bool> taken(experts, false);
      for (int k = 0; k < K; ++k) {
        const double u = uniform();
        int e = std::min(experts - 1, int(experts * u * u));
        while (taken[e]) e = (e + 1) % experts;
        taken[e] = true;
        expert.push_back(e);
        weight.push_back(float(0.1 + 0.9 * uniform()));
      }
    }
    for (int32_t e : expert) ++offsets[e + 1];
    for (int e = 0; e < experts; ++e) most = std::max(most, offsets[e + 1]), offsets[e + 1] += offsets[e];
    rows.resize(expert.size());
    std::vector<int32_t> next(offsets.begin(), offsets.end() - 1);
    for (size_t i = 0; i < expert.size(); ++i) rows[next[expert[i]]++] = int32_t(i);
    for (int e = 0; e < experts; ++e) std::shuffle(rows.begin() + offsets[e], rows.begin() + offsets[e + 1], rng);
  }
};

// ---- moe_group_by_expert -------------------------------------------------------------------------
namespace B = moe_group_by_expert;

/** Offsets are the experts' counts summed up; rows list every (token, slot) pair once, in its expert's range (any order within it). */
void check_group(int T) {
  const Routing r(T, B::EXPERTS, B::TOP_K);
  std::vector<int32_t> offsets(B::EXPERTS + 1, -1), rows(size_t(T) * B::TOP_K, -1);
  B::run(r.expert.data(), T, offsets.data(), rows.data());
  int64_t wrong = 0;
  for (int e = 0; e <= B::EXPERTS; ++e) wrong += offsets[e] != r.offsets[e];
  std::vector<int> seen(rows.size(), 0);
  for (int e = 0; e < B::EXPERTS && wrong == 0; ++e)
    for (int i = offsets[e]; i < offsets[e + 1]; ++i) {
      const int32_t pair = rows[i];
      if (pair < 0 || pair >= int32_t(rows.size()) || r.expert[pair] != e) ++wrong;
      else ++seen[pair];
    }
  for (int n : seen) wrong += n != 1;
  report(name("moe_group_by_expert/pairs/T%d", T), double(wrong), 0);
}

// ---- moe_w13_swiglu, moe_w2_combine_residual -----------------------------------------------------
namespace M1 = moe_w13_swiglu;
namespace M2 = moe_w2_combine_residual;
static_assert(plan::EXPERT_W1[0].rank[0].rows == M1::HIDDEN && plan::EXPERT_W1[0].rank[0].cols == M1::DIM);
static_assert(plan::EXPERT_W2[0].rank[0].rows == M2::DIM && plan::EXPERT_W2[0].rank[0].cols == M2::HIDDEN);

/** Every expert's weights of one kind (w1, w2 or w3) for one rank, and their views. */
struct ExpertWeights {
  std::vector<Weight> w;
  std::vector<mc_weight> views;
  ExpertWeights(const plan::Tensor (&tensors)[plan::EXPERTS], int rank, double scale) {
    w.reserve(plan::EXPERTS);
    for (const auto& t : tensors) w.emplace_back(t, rank, scale);
    for (const auto& x : w) views.push_back(x.view());
  }
};

/** hidden[row] = silu(w1_e · x) ⊙ (w3_e · x) for each grouped row, x the normed row of its token. */
void check_moe_w13(int T, int rank) {
  constexpr int DIM = M1::DIM, HIDDEN = M1::HIDDEN, K = M1::TOP_K;
  const Routing r(T, M1::EXPERTS, K);
  const ExpertWeights w1(plan::EXPERT_W1, rank, 1 / std::sqrt(double(DIM))), w3(plan::EXPERT_W3, rank, 1 / std::sqrt(double(DIM)));
  const std::vector<float> normed = normals(size_t(T) * DIM);
  std::vector<float> hidden(size_t(T) * K * HIDDEN, NAN);
  M1::run(normed.data(), r.offsets.data(), r.rows.data(), w1.views.data(), w3.views.data(), hidden.data());
  Vec ref(hidden.size());
  for (int e = 0; e < M1::EXPERTS; ++e)
    for (int i = r.offsets[e]; i < r.offsets[e + 1]; ++i) {
      const Vec x(normed.begin() + size_t(r.rows[i] / K) * DIM, normed.begin() + size_t(r.rows[i] / K + 1) * DIM);
      for (int u = 0; u < HIDDEN; ++u) ref[size_t(i) * HIDDEN + u] = silu(dot(x.data(), w1.w[e], u, DIM)) * dot(x.data(), w3.w[e], u, DIM);
    }
  report(name("moe_w13_swiglu/hidden/rank%d/T%d/most%d", rank, T, r.most), rel_l2(ref, widen(hidden)), proj_tol(r.most));
}

/** residual[token] += weight of (token, slot) · (w2_e · hidden[row]) for each grouped row. */
void check_moe_w2(int T, int rank) {
  constexpr int DIM = M2::DIM, HIDDEN = M2::HIDDEN, K = M2::TOP_K;
  const Routing r(T, M2::EXPERTS, K);
  const ExpertWeights w2(plan::EXPERT_W2, rank, 1 / std::sqrt(double(HIDDEN)));
  const std::vector<float> hidden = normals(size_t(T) * K * HIDDEN), before = normals(size_t(T) * DIM);
  std::vector<float> residual = before;
  M2::run(hidden.data(), r.offsets.data(), r.rows.data(), r.weight.data(), w2.views.data(), residual.data());
  Vec ref = widen(before);
  for (int e = 0; e < M2::EXPERTS; ++e)
    for (int i = r.offsets[e]; i < r.offsets[e + 1]; ++i) {
      const int32_t pair = r.rows[i];  // token * K + slot
      const Vec h(hidden.begin() + size_t(i) * HIDDEN, hidden.begin() + size_t(i + 1) * HIDDEN);
      for (int d = 0; d < DIM; ++d) ref[size_t(pair / K) * DIM + d] += r.weight[pair] * dot(h.data(), w2.w[e], d, HIDDEN);
    }
  report(name("moe_w2_combine_residual/residual/rank%d/T%d/most%d", rank, T, r.most), rel_l2(ref, widen(residual)), proj_tol(r.most));
}
#endif

// ---- the cases -----------------------------------------------------------------------------------
/** Token counts: decode (1), the GEMV's few tokens, one prefill tile of 16, 32 or 48, and more than one tile. */
std::vector<int> token_counts() {
  std::vector<int> out;
  for (int T : {1, 2, 3, 4, 7, 16, 17, 33, 49, plan::MAX_TOKENS})
    if (T <= plan::MAX_TOKENS && std::find(out.begin(), out.end(), T) == out.end()) out.push_back(T);
  return out;
}

/**
 * Start positions for T tokens of a layer with this window and ring: the sequence's start, a few in,
 * the ring's end, a chunk across the ring's wrap, and well past one or four turns of the ring; kept
 * where every key the queries see is still in the ring (a full-attention layer: start + T <= slots).
 */
std::vector<int> starts(int window, int slots, int T) {
  std::vector<int> out;
  for (int s : {0, uniform_int(1, 9), slots - T, slots - T / 2 - 1, slots + uniform_int(0, slots), 4 * slots + uniform_int(0, slots)})
    if (s >= 0 && keys_in_ring(window, slots, T, s) && std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
  return out;
}

template <int WINDOW, int KV_SLOTS>
void layer_cases() {
  for (int T : token_counts())
    for (int start : starts(WINDOW, KV_SLOTS, T)) {
      for (int rank = 0; rank < plan::TP; ++rank) check_qkv<KV_SLOTS>(WINDOW, T, start, rank);
      check_attention<WINDOW, KV_SLOTS>(T, start);
    }
}
}  // namespace

int main(int argc, char** argv) {
  const uint64_t seed = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : (uint64_t(std::random_device{}()) << 32) ^ std::random_device{}();
  rng.seed(seed);
  std::printf("%s seed %llu (replay: check_fused %llu), threads %d, avx512 %s, bf16 prefill rounds x %s\n", plan::KEY, (unsigned long long)seed,
              (unsigned long long)seed, omp_get_max_threads(),
#if defined(MC_AVX512)
              "yes",
#else
              "no",
#endif
              kPrefillRoundsX ? "yes" : "no");
  for (int T : token_counts()) {
    for (int rank = 0; rank < plan::TP; ++rank) {
      check_embedding(T, rank);
      check_wo(T, rank);
#if MC_DENSE
      check_w13(T, rank);
      check_w2(T, rank);
#else
      check_gate(T, rank, false);
      check_gate(T, rank, true);
      check_moe_w13(T, rank);
      check_moe_w2(T, rank);
#endif
      check_output(T, rank);
    }
#if !MC_DENSE
    check_group(T);
#endif
  }
#define MC_LAYER_CASES(WINDOW, KV_SLOTS) layer_cases<WINDOW, KV_SLOTS>();
  MC_LAYER_KINDS(MC_LAYER_CASES)
  std::printf("done, %d failed\n", failures);
  return failures == 0 ? 0 : 1;
}
