import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadModelConfig } from '../../compiler/config/load.js';
import { normalizeParams } from '../../compiler/config/normalize.js';
import { PlanError } from '../../compiler/errors.js';
import { buildPlan } from '../../compiler/plan/build-plan.js';
import { BLOCK_SUM_SMEM_BYTES, CUDA_MAX_SMEM_BYTES, cudaSharedMemoryNeeded, decodeAttentionSmem, GEMM_LARGE_SMEM_BYTES, prefillAttentionSmem } from '../../compiler/plan/cuda-limits.js';
import { DTYPES, TP_SIZES, type Dtype } from '../../compiler/plan/types.js';

const MODELS = join(import.meta.dirname, '../../configs/models');
const shipped = readdirSync(MODELS).filter((d) => existsSync(join(MODELS, d, 'params.json'))).sort();
const base = { dim: 64, n_layers: 1, head_dim: 16, hidden_dim: 128, n_heads: 4, n_kv_heads: 2, norm_eps: 1e-5, vocab_size: 512, rope_theta: 1e6 };

/** The one-line error of a CUDA plan of params (written as /m/params.json), or null when it plans. */
function cudaPlanError(params: object, options: { dtype?: 'bf16' | 'f16' | 'f32'; tp?: 1 | 2 | 4 | 8; maxTokens?: number } = {}): string | null {
  const model = normalizeParams({ max_seq_len: 65536, ...base, ...params }, '/m/params.json');
  try {
    buildPlan(model, { target: 'cuda', dtype: options.dtype ?? 'bf16', tp: options.tp ?? 1, maxTokens: options.maxTokens ?? 512 });
    return null;
  } catch (e) {
    expect(e).toBeInstanceOf(PlanError);
    return (e as Error).message;
  }
}

describe('the shapes the CUDA kernels can take (checked when a plan targets CUDA)', () => {
  it('every shipped config plans for CUDA at every dtype and every TP size it shards to', () => {
    for (const name of shipped) {
      const model = loadModelConfig(join(MODELS, name));
      for (const dtype of DTYPES) {
        for (const tp of TP_SIZES) {
          if (model.n_heads % tp !== 0 || model.hidden_dim % tp !== 0 || model.vocab_size % tp !== 0) continue;
          expect(() => buildPlan(model, { target: 'cuda', dtype, tp }), `${name} ${dtype} tp${tp}`).not.toThrow();
        }
      }
    }
  });

  it('a head, a residual row or a rank\'s hidden units that are not whole 16-byte chunks name the field and the fix', () => {
    // head_dim 12 is valid for the config (even) and for the CPU target, not for the CUDA kernels in bf16.
    expect(cudaPlanError({ dim: 48, head_dim: 12 })).toBe(
      '/m/params.json: head_dim: head_dim = 12: --target cuda reads a head in 16-byte chunks of 8 bf16 values, and 12 is not a multiple of 8; ' +
      'use --target cpu, or a head_dim that makes it a multiple of 8 (or --dtype f32: multiples of 4)');
    expect(cudaPlanError({ dim: 48, head_dim: 12 }, { dtype: 'f32' })).toBeNull();
    expect(cudaPlanError({ dim: 68, head_dim: 16 })).toMatch(/^\/m\/params\.json: dim: dim = 68: --target cuda reads a row of the residual in 16-byte chunks of 8 bf16 values/);
    expect(cudaPlanError({ hidden_dim: 132 })).toMatch(/: hidden_dim: hidden_dim = 132: .*a row of the hidden units.*132 is not a multiple of 8/);
    // At --tp 2 the rank's share counts: 144 / 2 = 72 is a multiple of 8, 136 / 2 = 68 is not.
    expect(cudaPlanError({ hidden_dim: 144 }, { tp: 2 })).toBeNull();
    expect(cudaPlanError({ hidden_dim: 136 })).toBeNull();
    expect(cudaPlanError({ hidden_dim: 136 }, { tp: 2 })).toMatch(/a rank's share of the hidden units \(hidden_dim \/ 2\) in 16-byte chunks of 8 bf16 values, and 68 is not a multiple of 8/);
  });

  it('rows or attention tiles larger than a block\'s shared memory are refused with the field, the need and the fix', () => {
    // w2's input row, f32 in shared memory: 49152 × 4 B = 192 KB, and block_sum's 128 B; at --tp 2 each rank holds half.
    expect(cudaPlanError({ hidden_dim: 49152 })).toBe(
      '/m/params.json: hidden_dim: hidden_dim = 49152: w2\'s input row needs 193 KB of shared memory in one CUDA block, more than the 163 KB a block may have; ' +
      'use --target cpu, or a larger --tp (it divides this row among the ranks)');
    expect(cudaPlanError({ hidden_dim: 49152 }, { tp: 2 })).toBeNull();
    // MoE: top-k rows of the experts' hidden units at once.
    const moe = { hidden_dim: 16384, moe: { num_experts: 8, num_experts_per_tok: 4 } };
    expect(cudaPlanError(moe)).toMatch(/: hidden_dim: hidden_dim = 16384: the experts' w2 input rows \(num_experts_per_tok = 4 of them\) needs 257 KB/);
    // A wide f32 head: the prefill attention's f32 tiles.
    expect(cudaPlanError({ dim: 1024, head_dim: 512, n_heads: 2, n_kv_heads: 1 }, { dtype: 'f32' })).toMatch(
      /: head_dim: head_dim = 512: the decode attention needs \d+ KB of shared memory .*; use --target cpu, or --dtype bf16$/);
  });

  it('a block\'s static shared memory counts: block_sum\'s array beside every row, the MoE gate\'s logits beside its row', () => {
    // 41696 f32 values and 128 B fill the 163 KB (166912 B) exactly; 41704 (the next multiple of 8) pass it by 32 B.
    expect(41696 * 4 + BLOCK_SUM_SMEM_BYTES).toBe(CUDA_MAX_SMEM_BYTES);
    expect(cudaPlanError({ dim: 41696 })).toBeNull();
    expect(cudaPlanError({ dim: 41704 })).toBe(
      '/m/params.json: dim: dim = 41704: a decode GEMV\'s input row needs 164 KB of shared memory in one CUDA block, more than the 163 KB a block may have; use --target cpu');
    // The gate: a row of 40960 f32 (160 KB), a logit an expert and block_sum's 128 B: 512 experts fit, 1024 do not.
    const gate = (num_experts: number) => cudaPlanError({ dim: 40960, moe: { num_experts, num_experts_per_tok: 2 } });
    expect(gate(512)).toBeNull();
    expect(gate(1024)).toBe('/m/params.json: dim: dim = 40960: the MoE gate\'s input row and its expert logits needs 165 KB of shared memory in one CUDA block, more than the 163 KB a block may have; use --target cpu');
  });

  it('f32 weights: a call\'s tokens (times top-k for the experts) must fit one GEMV grid\'s 65535 rows, since f32 prefill runs the GEMV', () => {
    expect(cudaPlanError({}, { dtype: 'f32', maxTokens: 65535 })).toBeNull();
    expect(cudaPlanError({}, { dtype: 'f32', maxTokens: 65536 })).toBe(
      '--max-tokens: 65536 tokens a call in f32 are 65536 rows of one CUDA GEMV grid, more than its 65535; allow 65535 tokens a call or fewer (--max-tokens for plan and build, --max-tokens-per-call for logits and generate: longer prompts are prefilled in chunks of that many), or use bf16 weights');
    const moe = { moe: { num_experts: 8, num_experts_per_tok: 2 } };
    expect(cudaPlanError(moe, { dtype: 'f32', maxTokens: 32767 })).toBeNull();
    expect(cudaPlanError(moe, { dtype: 'f32', maxTokens: 32768 })).toMatch(/^--max-tokens: 32768 tokens a call × 2 experts each in f32 are 65536 rows of one CUDA GEMV grid, more than its 65535; allow 32767 tokens a call or fewer/);
    // 16-bit weights prefill on the GEMMs (their grids put the tokens in tiles of 64 or more).
    expect(cudaPlanError(moe, { dtype: 'bf16', maxTokens: 65536 })).toBeNull();
    // The plan counts at most max_seq_len tokens a call.
    expect(cudaPlanError({ max_seq_len: 4096 }, { dtype: 'f32', maxTokens: 65536 })).toBeNull();
  });

  it('more than 32 query heads to a KV head (a warp each in one block) are refused, naming n_kv_heads', () => {
    expect(cudaPlanError({ dim: 1024, head_dim: 16, n_heads: 64, n_kv_heads: 1 })).toBe(
      '/m/params.json: n_kv_heads: n_kv_heads = 1: 64 query heads share a KV head, and --target cuda scores at most 32 of them in one block (a warp each); ' +
      'use --target cpu, or at least 2 KV heads');
    expect(cudaPlanError({ dim: 1024, head_dim: 16, n_heads: 64, n_kv_heads: 2 })).toBeNull();
  });

  it('the decode attention ring is 3 stages deep, 2 where 3 would pass 96 KB; sizes as the kernels compute them', () => {
    // Mistral 7B's heads in bf16 (mc::DecodeTile: 3 × 32 keys × (136 + 128) × 2 B + 4 heads × 128 × 4 B).
    expect(decodeAttentionSmem(128, 4, 'bf16')).toEqual({ stages: 3, bytes: 3 * 32 * 264 * 2 + 4 * 128 * 4 });
    // f32: 3 stages would be 99.5 KB, over the 99 KB of compute capability 8.6 / 8.9 (where the sm_80 code runs).
    expect(decodeAttentionSmem(128, 4, 'f32')).toEqual({ stages: 2, bytes: 2 * 32 * 260 * 4 + 4 * 128 * 4 });
    expect(decodeAttentionSmem(64, 4, 'f32')).toEqual({ stages: 3, bytes: 3 * 32 * 132 * 4 + 4 * 64 * 4 });
    expect(decodeAttentionSmem(256, 4, 'f32')).toEqual({ stages: 2, bytes: 2 * 32 * 516 * 4 + 4 * 256 * 4 });
    // Flash tiles for 16-bit caches up to head_dim 128; the f32 kernel's tiles otherwise.
    expect(prefillAttentionSmem(128, 4, 'bf16')).toBe(2 * 2 * 64 * 136 * 2);
    expect(prefillAttentionSmem(128, 4, 'f32')).toBe(32 * 257 * 4 + 32 * 128 * 4);
    for (const name of shipped) {
      const m = loadModelConfig(join(MODELS, name));
      for (const dtype of DTYPES) expect(decodeAttentionSmem(m.head_dim, m.n_heads / m.n_kv_heads, dtype).bytes).toBeLessThanOrEqual(CUDA_MAX_SMEM_BYTES);
    }
  });

  it('the most shared memory a block asks for, which the library checks against the GPU before it allocates', () => {
    const need = (name: string, dtype: Dtype) => {
      const model = loadModelConfig(join(MODELS, name));
      return cudaSharedMemoryNeeded(model, buildPlan(model, { target: 'cuda', dtype, tp: 1 }).rank_shape, dtype);
    };
    // Each with block_sum's static 128 B (counted for every kernel).
    expect(need('mistral-7b-v0.1', 'bf16')).toBe(GEMM_LARGE_SMEM_BYTES + BLOCK_SUM_SMEM_BYTES);  // the 128 x 128 GEMM tile, 80 KB
    expect(need('mistral-7b-v0.1', 'f32')).toBe(2 * 32 * 260 * 4 + 4 * 128 * 4 + BLOCK_SUM_SMEM_BYTES);  // no GEMM in f32: the decode attention, 67 KB
    expect(need('mixtral-8x7b', 'bf16')).toBe(2 * 14336 * 4 + BLOCK_SUM_SMEM_BYTES);  // the experts' w2: top-2 rows of 14336 f32, 112 KB
    for (const name of shipped) for (const dtype of DTYPES) expect(need(name, dtype)).toBeLessThanOrEqual(CUDA_MAX_SMEM_BYTES);
  });

  it('the CPU target takes the shapes the CUDA kernels refuse', () => {
    const model = normalizeParams({ ...base, dim: 48, head_dim: 12 }, '/m/params.json');
    expect(() => buildPlan(model, { target: 'cpu', dtype: 'bf16', tp: 1 })).not.toThrow();
  });
});
