import { checkpointTensors } from '../config/checkpoint.js';
import { checkModelConfig } from '../config/check-model.js';
import type { ModelConfig } from '../config/model.js';
import { PlanError, showValue } from '../errors.js';
import { checkCpuShapes } from './cpu-limits.js';
import { checkCudaShapes } from './cuda-limits.js';
import { epilogueKernels, layerKernels, prologueKernels } from './kernels.js';
import { activationBuffers, kvCachePlan } from './memory.js';
import { MOE_WHY, rankShape, SHARDING_RULES, shardWeights } from './sharding.js';
import { DTYPES, TARGETS, TP_SIZES, type Plan, type PlanOptions } from './types.js';

export const DEFAULT_PLAN_OPTIONS: PlanOptions = { target: 'cpu', dtype: 'bf16', tp: 1, maxTokens: 512 };

/** Specialization key: model, target, dtype and TP, readable; names build outputs and cache entries. */
export function specializationKey(model: ModelConfig, options: PlanOptions): string {
  return `${model.name}.${options.target}.${options.dtype}.tp${options.tp}`;
}

export function checkPlanOptions(options: PlanOptions): void {
  if (!TARGETS.includes(options.target)) throw new PlanError('--target', undefined, `unknown target ${JSON.stringify(options.target)}`, `use one of ${TARGETS.join(', ')}`);
  if (!DTYPES.includes(options.dtype)) throw new PlanError('--dtype', undefined, `unknown dtype ${JSON.stringify(options.dtype)}`, `use one of ${DTYPES.join(', ')}`);
  if (!TP_SIZES.includes(options.tp)) throw new PlanError('--tp', undefined, `unsupported tensor-parallel size ${JSON.stringify(options.tp)}`, `use one of ${TP_SIZES.join(', ')}`);
  if (!Number.isSafeInteger(options.maxTokens) || options.maxTokens < 1 || options.maxTokens > 65536) {
    throw new PlanError('--max-tokens (maxTokens)', undefined, `must be an integer from 1 to 65536 (got ${showValue(options.maxTokens)})`, 'pass a prefill chunk size such as 512');
  }
}

/** The whole plan for one model and one specialization. Pure and deterministic. */
export function buildPlan(model: ModelConfig, partial: Partial<PlanOptions> = {}): Plan {
  checkModelConfig(model);  // the API takes plain data: a config made by hand is checked as a params.json is
  const options: PlanOptions = { ...DEFAULT_PLAN_OPTIONS, ...partial };
  checkPlanOptions(options);
  const shape = rankShape(model, options.tp);
  const maxTokens = Math.min(options.maxTokens, model.max_seq_len);
  if (options.target === 'cuda') checkCudaShapes(model, shape, options.dtype, options.tp, maxTokens);
  else checkCpuShapes(model, shape, options.tp);
  return {
    format: 'mistral-compile.plan/1',
    key: specializationKey(model, options),
    model,
    options: { ...options, maxTokens },
    rank_shape: shape,
    prologue: prologueKernels(model, shape, options.tp),
    layers: Array.from({ length: model.n_layers }, (_, i) => layerKernels(model, shape, options.tp, i, maxTokens)),
    epilogue: epilogueKernels(model, shape, options.tp),
    kv_cache: kvCachePlan(model, shape, options.dtype, maxTokens),
    sharding: {
      rules: SHARDING_RULES.filter((r) => (model.moe === null ? !/gate|experts/.test(r.tensor) : !/feed_forward\.w[123]/.test(r.tensor))
        && (r.tensor !== 'output.weight' || !model.tied_embeddings)),
      moe_strategy: model.moe === null ? null : 'within_expert',
      moe_why: model.moe === null ? null : MOE_WHY,
    },
    weights: shardWeights(model, checkpointTensors(model), options.tp),
    buffers: activationBuffers(model, shape, maxTokens),
  };
}
