// The wgmma GEMM's data layout, replayed on the CPU (no GPU needed; built and run by
// wgmma-layout.test.ts). The kernel's own index helpers (mc_gemm_wgmma.cuh) place every A and B
// element in the shared-memory image of each stage, exactly where the kernel's threads store them;
// an emulated wgmma then reads the operands back as the PTX ISA defines the descriptor and the
// K-major 128-byte-swizzled layout, multiplies, and hands each product to the thread and register
// that the ISA's accumulator layout names; the kernel's epilogue mapping turns registers into
// output columns (plain and PAIRED). The result must equal a float64 product of the same matrices.
// What this cannot check is the hardware itself: that the descriptor and swizzle rules written
// below are the ones the tensor cores follow is checked by the GPU kernel check (test/gpu).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "mc_cuda.cuh"

using namespace mc::wgmma;

namespace {

int failures = 0;
void expect(bool ok, const char* what) {
  if (!ok) {
    std::printf("FAIL %s\n", what);
    ++failures;
  }
}

/** A float with at most 8 significant bits, so that it is exactly a bf16: its top 16 bits. */
uint16_t bf16_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return uint16_t(u >> 16);
}
float bf16_value(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

// ---- the ISA's side, written from the PTX ISA and not from the kernel ------------------------------
/** Reads operand element (row, k < 16) through a descriptor: K-major canonical layout with the
 *  128-byte swizzle ((8, m), (8, 2)) : ((64, SBO), (1, 8)) in elements, then bits 4-6 of the byte
 *  address XOR bits 7-9. */
uint16_t read_operand(const std::vector<uint8_t>& smem, uint64_t desc, int row, int k) {
  const uint32_t start = uint32_t(desc & 0x3FFF) << 4, sbo = uint32_t((desc >> 32) & 0x3FFF) << 4;
  const int layout = int(desc >> 62);
  if (layout != 1) return 0xFFFF;  // not the 128-byte swizzle: the check fails below
  uint32_t addr = start + uint32_t(row / 8) * sbo + uint32_t(row % 8) * 128 + uint32_t(k) * 2;
  addr ^= ((addr >> 7) & 7) << 4;
  uint16_t v;
  std::memcpy(&v, &smem.at(addr), 2);
  return v;
}
/** wgmma's f32 accumulator layout for m64nN: thread t of the warpgroup, register i. */
void isa_accumulator(int t, int i, int& row, int& col) {
  const int warp = t / 32, lane = t % 32;
  row = 16 * warp + lane / 4 + ((i % 4) >= 2 ? 8 : 0);
  col = 8 * (i / 4) + 2 * (lane % 4) + (i % 2);
}

// ---- the replay ------------------------------------------------------------------------------------
/**
 * One block tile: A [BM][K], B [BN][K] (K-major), KT stages through an emulated shared memory whose
 * dynamic base sits at `raw` (the kernel aligns it to 1024). Returns the relative L2 error of the
 * block's output against float64, with PAIRED read as the kernel's SwiGLU epilogue reads it.
 */
double replay(int K, uint32_t raw, bool paired, std::mt19937& rng) {
  std::uniform_int_distribution<int> small(-8, 8);
  std::vector<float> A(size_t(BM) * K), B(size_t(BN) * K);
  for (auto& x : A) x = float(small(rng)) / 8.f;
  for (auto& x : B) x = float(small(rng)) / 4.f;

  std::vector<uint8_t> smem(raw + SMEM_BYTES, 0xEE);
  const uint32_t base = (raw + 1023u) & ~1023u;
  expect(base + uint32_t(STAGES) * STAGE_BYTES <= raw + SMEM_BYTES, "the aligned stages fit the dynamic shared memory");
  std::vector<std::vector<float>> acc(THREADS, std::vector<float>(64, 0.f));
  const int KT = (K + BK - 1) / BK;
  for (int kt = 0; kt < KT; ++kt) {
    const int s = kt % STAGES;
    const uint32_t a_tile = base + s * STAGE_BYTES, b_tile = a_tile + A_BYTES;
    std::vector<int> written(STAGE_BYTES, 0);
    // The kernel's stores: A as 4 narrowed values (8 bytes) per load, B as 16-byte copies (zeros past K).
    for (int tid = 0; tid < THREADS; ++tid) {
      for (int j = 0; j < A_LOADS; ++j) {
        const uint32_t at = a_tile + swizzled(a_row(tid, j), a_col(tid, j));
        for (int e = 0; e < 4; ++e) {
          const int k = kt * BK + a_col(tid, j) + e;
          const uint16_t v = k < K ? bf16_bits(A[size_t(a_row(tid, j)) * K + k]) : 0;
          std::memcpy(&smem.at(at + 2 * e), &v, 2);
          written.at(at + 2 * e - a_tile) += 1, written.at(at + 2 * e + 1 - a_tile) += 1;
        }
      }
      for (int j = 0; j < B_LOADS; ++j) {
        const uint32_t at = b_tile + swizzled(b_row(tid, j), 8 * b_chunk(tid, j));
        for (int e = 0; e < 8; ++e) {
          const int k = kt * BK + 8 * b_chunk(tid, j) + e;
          const uint16_t v = k < K ? bf16_bits(B[size_t(b_row(tid, j)) * K + k]) : 0;
          std::memcpy(&smem.at(at + 2 * e), &v, 2);
          written.at(at + 2 * e - a_tile) += 1, written.at(at + 2 * e + 1 - a_tile) += 1;
        }
      }
    }
    bool once = true;
    for (int w : written) once = once && w == 1;
    expect(once, "every byte of a stage is written exactly once");
    // The kernel's wgmma calls: warpgroup wg reads its 64 rows of A; k-step ks is +32 bytes.
    for (int wg = 0; wg < 2; ++wg)
      for (int ks = 0; ks < BK / 16; ++ks) {
        const uint64_t da = descriptor(a_tile + wg * 64 * 128 + 32 * ks), db = descriptor(b_tile + 32 * ks);
        for (int t = 0; t < 128; ++t)
          for (int i = 0; i < 64; ++i) {
            int row, col;
            isa_accumulator(t, i, row, col);
            float sum = 0.f;
            for (int k = 0; k < 16; ++k) sum += bf16_value(read_operand(smem, da, row, k)) * bf16_value(read_operand(smem, db, col, k));
            acc[128 * wg + t][i] += sum;
          }
      }
  }
  // The kernel's epilogue: thread tid, register i -> output row acc_row, column acc_col (plain), or
  // units (PAIRED: w1 and w3 alternate every 8 tile rows of B, 64 units per block).
  double err = 0, ref_norm = 0;
  for (int tid = 0; tid < THREADS; ++tid)
    for (int i = 0; i < 64; i += 2)
      for (int h = 0; h < 2; ++h) {
        const int m = acc_row(tid, i);
        int bcol;   // the B tile row whose product this register holds, by the kernel's reading
        if (paired) {
          if ((i / 4) % 2 != 0) continue;
          const int u = (i / 8) * 8 + 2 * (tid % 4) + h;  // unit within the block
          // store_pair(u, w1 = acc[i + h], w3 = acc[i + 4 + h]); the B loader put unit u's w1 row at
          // tile row 16 (u / 8) + u % 8 and its w3 row 8 rows later.
          const int w1_row = 16 * (u / 8) + u % 8;
          for (int which = 0; which < 2; ++which) {
            bcol = w1_row + 8 * which;
            double ref = 0;
            for (int k = 0; k < K; ++k) ref += double(A[size_t(m) * K + k]) * B[size_t(bcol) * K + k];
            const double got = acc[tid][i + 4 * which + h];
            err += (got - ref) * (got - ref), ref_norm += ref * ref;
          }
        } else {
          bcol = acc_col(tid, i) + h;
          double ref = 0;
          for (int k = 0; k < K; ++k) ref += double(A[size_t(m) * K + k]) * B[size_t(bcol) * K + k];
          const double got = acc[tid][i + h];
          err += (got - ref) * (got - ref), ref_norm += ref * ref;
        }
      }
  return std::sqrt(err / ref_norm);
}

}  // namespace

int main() {
  // The helpers against the ISA's accumulator layout, register by register.
  bool same = true;
  for (int tid = 0; tid < THREADS; ++tid)
    for (int i = 0; i < 64; ++i) {
      int row, col;
      isa_accumulator(tid % 128, i, row, col);
      same = same && acc_row(tid, i) == 64 * (tid / 128) + row && acc_col(tid, i) == col;
    }
  expect(same, "acc_row/acc_col follow the ISA's accumulator layout");
  expect(descriptor(0x12340) >> 62 == 1 && ((descriptor(0x12340) >> 32) & 0x3FFF) == 64 && (descriptor(0x12340) & 0x3FFF) == 0x1234,
         "descriptor: address >> 4, 1024-byte stride, 128-byte swizzle");

  std::mt19937 rng(std::random_device{}());
  struct Case { int K; uint32_t raw; bool paired; const char* name; };
  const Case cases[] = {
      {64, 0, false, "K 64, aligned base"},
      {320, 16, false, "K 320 (5 stages, every buffer), base at 16"},
      {456, 528, false, "K 456 (a partial last stage), base at 528"},
      {392, 1008, true, "PAIRED, K 392, base at 1008"},
  };
  for (const Case& c : cases) {
    const double e = replay(c.K, c.raw, c.paired, rng);
    const bool ok = std::isfinite(e) && e <= 1e-6;
    std::printf("%s wgmma layout replay: %s, relative L2 %.3g\n", ok ? "ok" : "FAIL", c.name, e);
    if (!ok) ++failures;
  }
  std::printf("%d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
