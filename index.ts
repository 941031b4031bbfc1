/**
 * mistral-compile as a library: read and validate a params.json, plan the fused kernels and the
 * tensor-parallel sharding, render and build a model's library, and run it.
 */
export { ConfigError, MistralCompileError, PlanError } from './compiler/errors.js';
export type { ModelConfig, MoeConfig } from './compiler/config/model.js';
export { loadModelConfig } from './compiler/config/load.js';
export { normalizeParams, type NormalizeOptions } from './compiler/config/normalize.js';
export { checkpointTensors, type CheckpointTensor } from './compiler/config/checkpoint.js';
export { loadDeviceProfile, listDeviceProfiles, type DeviceProfile } from './compiler/config/devices.js';
export { shippedModelConfigs } from './compiler/config/shipped.js';
export { buildPlan, specializationKey } from './compiler/plan/build-plan.js';
export { planStats, type PlanStats } from './compiler/plan/stats.js';
export type { Plan, PlanOptions, KernelNode, LayerPlan, WeightEntry, ShardSlice, Dtype, Target, TpSize } from './compiler/plan/types.js';

// Running compiled models.
export { loadModel, type LoadedModel, type LoadOptions, type GenerateOptions, type LoadProgress, type ModelSequence } from './runtime/model.js';
export type { DistributedOptions } from './runtime/distributed.js';
export { EnvironmentError, MachineError, RuntimeError } from './runtime/errors.js';
export { BuildError } from './compiler/build/errors.js';
export { buildPlanLibrary, type BuildOptions, type BuildProgress, type BuildResult } from './compiler/build/build.js';
export { renderCpuSources, type RenderedSources, type RenderOptions, type SourceFile } from './compiler/emit/render.js';
export { writeRandomWeights, type RandomWeightsOptions, type RandomWeightsResult } from './compiler/weights/random.js';
export { writeGgufFromCheckpoint, type GgufResult } from './compiler/weights/gguf.js';
export { WeightsError } from './compiler/weights/errors.js';
