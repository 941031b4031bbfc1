import { showValue } from '../compiler/errors.js';
import type { Dtype, Plan } from '../compiler/plan/types.js';
import { DTYPE_BYTES, type Dtype as FileDtype } from '../compiler/weights/dtype.js';
import { WeightsError } from '../compiler/weights/errors.js';
import type { Checkpoint } from './checkpoint-files.js';

/**
 * Binds a checkpoint's validated safetensors headers (one file, or its shards) to a plan: the
 * checkpoint must hold exactly the plan's tensors, with the plan's shapes, in one dtype; each rank
 * then gets zero-copy views of its slices, each in the file that holds its tensor.
 */

const TO_PLAN_DTYPE: Record<FileDtype, Dtype> = { F32: 'f32', BF16: 'bf16', F16: 'f16' };

/** The one dtype every tensor of the checkpoint has (compiled code is specialized for it). */
export function checkpointDtype(checkpoint: Checkpoint): Dtype {
  let first: [string, FileDtype] | undefined;
  for (const [name, { file, info }] of checkpoint.tensors) {
    if (first === undefined) first = [name, info.dtype];
    else if (info.dtype !== first[1]) {
      throw new WeightsError(checkpoint.files[file]!.path, `tensor ${showValue(name)}`, `is ${info.dtype} but ${showValue(first[0])} is ${first[1]}: mixed dtypes are not supported`,
        `convert the checkpoint to one dtype (e.g. mistral-compile random-weights --dtype bf16 writes a uniform one)`);
    }
  }
  if (first === undefined) throw new WeightsError(checkpoint.display, undefined, 'holds no tensors', 'point at the model\'s consolidated.safetensors');
  return TO_PLAN_DTYPE[first[1]];
}

/** Every plan weight present with its shape; no tensor the plan does not know. */
export function checkCheckpointMatchesPlan(checkpoint: Checkpoint, plan: Plan): void {
  const wanted = new Set(plan.weights.map((w) => w.name));
  for (const w of plan.weights) {
    const found = checkpoint.tensors.get(w.name);
    if (found === undefined) {
      throw new WeightsError(checkpoint.display, `tensor ${showValue(w.name)}`, 'is missing', `the checkpoint does not match ${plan.model.source}; use the weights of this model`);
    }
    const t = found.info, path = checkpoint.files[found.file]!.path;
    if (t.shape.length !== w.shape.length || t.shape.some((d, i) => d !== w.shape[i])) {
      throw new WeightsError(path, `tensor ${showValue(w.name)}`, `has shape [${t.shape.join(', ')}] but ${plan.model.source} implies [${w.shape.join(', ')}]`,
        'use the params.json that belongs to these weights');
    }
    if (TO_PLAN_DTYPE[t.dtype] !== plan.options.dtype) {
      throw new WeightsError(path, `tensor ${showValue(w.name)}`, `is ${t.dtype}, the build expects ${plan.options.dtype}`, 'rebuild for the checkpoint\'s dtype');
    }
  }
  for (const [name, { file }] of checkpoint.tensors) {
    if (!wanted.has(name)) {
      throw new WeightsError(checkpoint.files[file]!.path, `tensor ${showValue(name)}`, `is not part of the model that ${plan.model.source} describes`,
        'use the params.json that belongs to these weights (an extra tensor means a different architecture)');
    }
  }
}

/** One rank's view of one weight: where its slice starts in which file and how it is laid out. */
export interface WeightView {
  name: string;
  /** Index in Checkpoint.files of the file that holds the tensor. */
  file: number;
  /** Absolute offset of the slice's first element in that file. */
  offset: number;
  /** Elements between rows of the full tensor. */
  rowStride: number;
  rows: number;
  cols: number;
  /** Bytes from offset to the end of the slice's last row. */
  bytes: number;
}

export function rankWeightViews(checkpoint: Checkpoint, plan: Plan, rank: number): WeightView[] {
  const elt = DTYPE_BYTES[Object.entries(TO_PLAN_DTYPE).find(([, d]) => d === plan.options.dtype)![0] as FileDtype];
  return plan.weights.map((w) => {
    const { file, info: t } = checkpoint.tensors.get(w.name)!;
    const slice = w.slices[rank]!;
    const fullRows = w.shape[0]!;
    const fullCols = w.shape.length === 1 ? 1 : w.shape[1]!;
    const rows = slice.axis === 0 ? slice.length : fullRows;
    const cols = slice.axis === 1 ? slice.length : fullCols;
    const first = slice.axis === 0 ? slice.start * fullCols : slice.axis === 1 ? slice.start : 0;
    const lastRowEnd = (rows - 1) * fullCols + cols;
    return { name: w.name, file, offset: t.offset + first * elt, rowStride: fullCols, rows, cols, bytes: lastRowEnd * elt };
  });
}
