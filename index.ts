/**
 * mistral-compile as a library. The compiler stages in order: read and validate a params.json,
 * plan the fused kernels and the tensor-parallel sharding.
 */
export { ConfigError, MistralCompileError, PlanError } from './compiler/errors.js';
export type { ModelConfig, MoeConfig } from './compiler/config/model.js';
export { loadModelConfig } from './compiler/config/load.js';
export { normalizeParams } from './compiler/config/normalize.js';
export { checkpointTensors, type CheckpointTensor } from './compiler/config/checkpoint.js';
export { loadDeviceProfile, listDeviceProfiles, type DeviceProfile } from './compiler/config/devices.js';
export { shippedModelConfigs } from './compiler/config/shipped.js';
export { buildPlan, specializationKey } from './compiler/plan/build-plan.js';
export { planStats, type PlanStats } from './compiler/plan/stats.js';
export type { Plan, PlanOptions, KernelNode, LayerPlan, WeightEntry, ShardSlice, Dtype, Target, TpSize } from './compiler/plan/types.js';
