import type { ModelConfig } from '../config/model.js';
import { PlanError } from '../errors.js';
import { DTYPE_BYTES } from './memory.js';
import type { Dtype, Shape } from './types.js';

/**
 * The shapes the CUDA kernels can take, checked when a plan targets CUDA: a params.json that the
 * config validation accepts but these kernels cannot run (a head_dim that is not a whole number of
 * 16-byte chunks, a hidden_dim whose row does not fit a block's shared memory) fails here with its
 * field and a fix, instead of in nvcc (a static_assert) or at the first launch (too much shared
 * memory). The sizes mirror the kernels' own (named at each); the templates static_assert the same
 * limit (mc::kMaxSmemBytes), and model.cu that cudaSharedMemoryNeeded equals the largest of the
 * kernels' own sizes (kernels_smem), so a drift between the two fails the build, never a launch.
 */

/** Shared memory one block may use: what sm_80 allows after opting in (sm_90 allows 227 KB). */
export const CUDA_MAX_SMEM_BYTES = 163 * 1024;

/**
 * mc::kBlockSumSmemBytes: the static array of mc::block_sum (a float a warp), which a kernel that
 * normalizes a row holds beside its dynamic shared memory. A block's limit counts both
 * (cudaFuncSetAttribute refuses a dynamic size that leaves no room for the kernel's static arrays),
 * so every need below is checked with it added, whether or not its kernel sums over the block.
 */
export const BLOCK_SUM_SMEM_BYTES = 32 * 4;

/** Blocks a grid may have along y: the decode GEMV's items (tokens, or routed rows) when it also runs prefill (f32 weights). */
export const CUDA_MAX_GRID_Y = 65535;

/** Elements of a 16-byte chunk: the unit every CUDA kernel reads rows in (mc::kVec). */
export function cudaVec(dtype: Dtype): number {
  return 16 / DTYPE_BYTES[dtype];
}

/** mc::DecodeTile: the decode attention's cp.async ring (3 stages, 2 where 3 would pass 96 KB) and its queries. */
export function decodeAttentionSmem(headDim: number, group: number, dtype: Dtype): { stages: number; bytes: number } {
  const elt = DTYPE_BYTES[dtype], vec = cudaVec(dtype);
  const stage = 32 * (headDim + vec + headDim) * elt, queries = group * headDim * 4;
  const stages = 3 * stage + queries <= DECODE_THREE_STAGES_MAX ? 3 : 2;
  return { stages, bytes: stages * stage + queries };
}
/** mc::kDecodeThreeStagesMax: up to this many bytes the ring is 3 stages deep (under the 99 KB a block may have on compute capability 8.6 and 8.9). */
export const DECODE_THREE_STAGES_MAX = 96 * 1024;

/** The prefill attention: flash tiles (16-bit caches, head_dim ≤ 128, mc::FlashTile) or the f32 kernel's (mc::PrefillTile). */
export function prefillAttentionSmem(headDim: number, group: number, dtype: Dtype): number {
  if (dtype !== 'f32' && headDim % 16 === 0 && headDim <= 128 && group <= 64) return 2 * 2 * 64 * (headDim + 8) * 2;
  const rows = (group >= 32 ? 1 : Math.floor(32 / group)) * group;
  return 32 * (2 * headDim + 1) * 4 + rows * headDim * 4;
}

/** Every shared-memory size the plan's kernels ask for, with the params.json field that sets it. */
function sharedMemoryNeeds(model: ModelConfig, shape: Shape, dtype: Dtype): Array<{ field: string; value: number; what: string; bytes: number; perRank?: boolean }> {
  const group = shape.n_heads / shape.n_kv_heads;
  const needs = [
    { field: 'head_dim', value: model.head_dim, what: 'the decode attention', bytes: decodeAttentionSmem(model.head_dim, group, dtype).bytes },
    { field: 'head_dim', value: model.head_dim, what: 'the prefill attention', bytes: prefillAttentionSmem(model.head_dim, group, dtype) },
    // Decode GEMVs keep their input rows in shared memory as f32 (mc::gemv_smem_bytes: NSRC × K × 4).
    { field: 'dim', value: model.dim, what: 'a decode GEMV\'s input row', bytes: model.dim * 4 },
    { field: 'head_dim', value: model.head_dim, what: 'wo\'s input row (n_heads × head_dim)', bytes: shape.n_heads * model.head_dim * 4, perRank: true },
  ];
  if (model.moe === null) {
    needs.push({ field: 'hidden_dim', value: model.hidden_dim, what: 'w2\'s input row', bytes: shape.hidden_dim * 4, perRank: true });
  } else {
    // rmsnorm_moe_gate_topk_softmax: the normalized row (dynamic) and the expert logits (static).
    const byExperts = model.moe.num_experts > model.dim;  // the field to name: the larger of the two terms
    needs.push({ field: byExperts ? 'moe.num_experts' : 'dim', value: byExperts ? model.moe.num_experts : model.dim, what: 'the MoE gate\'s input row and its expert logits',
      bytes: model.dim * 4 + model.moe.num_experts * 4 });
    needs.push({ field: 'hidden_dim', value: model.hidden_dim, what: `the experts' w2 input rows (num_experts_per_tok = ${model.moe.num_experts_per_tok} of them)`,
      bytes: model.moe.num_experts_per_tok * shape.hidden_dim * 4, perRank: true });
  }
  return needs;
}

/**
 * mc::GemmLarge::smem_bytes(): the prefill GEMM's large tile (4 stages of 128 + 128 rows of 40 16-bit
 * values), the most of its tiles; mc::GemmDeep (8 stages of 64 + 64 rows) takes the same 80 KB.
 */
export const GEMM_LARGE_SMEM_BYTES = 4 * (128 + 128) * 40 * 2;

/**
 * The most shared memory one block of this plan's kernels takes, dynamic and static together, on any
 * GPU (the sm_90a wgmma tile aside: it runs only where a block may have 227 KB): the library checks
 * it against the GPU's opt-in limit before it allocates anything (model.cu's check_device).
 */
export function cudaSharedMemoryNeeded(model: ModelConfig, shape: Shape, dtype: Dtype): number {
  const needs = sharedMemoryNeeds(model, shape, dtype).map((n) => n.bytes);
  if (dtype !== 'f32') needs.push(GEMM_LARGE_SMEM_BYTES);
  return Math.max(...needs) + BLOCK_SUM_SMEM_BYTES;
}

/**
 * Throws a PlanError naming the params.json field (or the option) when the CUDA kernels cannot take
 * this model at this dtype, --tp and --max-tokens (the most tokens of one forward call).
 */
export function checkCudaShapes(model: ModelConfig, shape: Shape, dtype: Dtype, tp: number, maxTokens: number): void {
  const vec = cudaVec(dtype);
  // The decode attention gives each query head of a KV group a warp of one block (mc::DecodeTile).
  const group = shape.n_heads / shape.n_kv_heads;
  if (group > 32) {
    throw new PlanError(model.source, 'n_kv_heads', `n_kv_heads = ${model.n_kv_heads}: ${group} query heads share a KV head${tp > 1 ? ' on a rank' : ''}, and --target cuda scores at most 32 of them in one block (a warp each)`,
      `use --target cpu, or at least ${Math.ceil(model.n_heads / 32)} KV heads`);
  }
  const chunks: Array<[string, number, number, string]> = [
    ['head_dim', model.head_dim, model.head_dim, 'a head'],
    ['dim', model.dim, model.dim, 'a row of the residual'],
    ['hidden_dim', model.hidden_dim, shape.hidden_dim, tp > 1 ? `a rank's share of the hidden units (hidden_dim / ${tp})` : 'a row of the hidden units'],
  ];
  for (const [field, value, local, what] of chunks) {
    if (local % vec !== 0) {
      throw new PlanError(model.source, field, `${field} = ${value}: --target cuda reads ${what} in 16-byte chunks of ${vec} ${dtype} values, and ${local} is not a multiple of ${vec}`,
        `use --target cpu, or a ${field} that makes it a multiple of ${vec}${dtype === 'f32' ? '' : ' (or --dtype f32: multiples of 4)'}`);
    }
  }
  for (const need of sharedMemoryNeeds(model, shape, dtype)) {
    const bytes = need.bytes + BLOCK_SUM_SMEM_BYTES;
    if (bytes > CUDA_MAX_SMEM_BYTES) {
      throw new PlanError(model.source, need.field, `${need.field} = ${need.value}: ${need.what} needs ${Math.ceil(bytes / 1024)} KB of shared memory in one CUDA block, more than the ${CUDA_MAX_SMEM_BYTES / 1024} KB a block may have`,
        `use --target cpu${need.perRank === true && tp < 8 ? ', or a larger --tp (it divides this row among the ranks)' : ''}${need.field === 'head_dim' && dtype === 'f32' ? ', or --dtype bf16' : ''}`);
    }
  }
  // f32 weights have no tensor-core GEMM: prefill runs the decode GEMV with an item (grid row) per
  // token, or per routed (token, expert) pair for the experts.
  const items = maxTokens * (model.moe?.num_experts_per_tok ?? 1);
  if (dtype === 'f32' && items > CUDA_MAX_GRID_Y) {
    const most = Math.floor(CUDA_MAX_GRID_Y / (model.moe?.num_experts_per_tok ?? 1));
    // The option is --max-tokens for plan and build, --max-tokens-per-call for logits and generate.
    throw new PlanError('--max-tokens', undefined, `${maxTokens} tokens a call${model.moe === null ? '' : ` × ${model.moe.num_experts_per_tok} experts each`} in f32 are ${items} rows of one CUDA GEMV grid, more than its ${CUDA_MAX_GRID_Y}`,
      `allow ${most} tokens a call or fewer (--max-tokens for plan and build, --max-tokens-per-call for logits and generate: longer prompts are prefilled in chunks of that many), or use bf16 weights`);
  }
}
