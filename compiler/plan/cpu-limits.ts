import type { ModelConfig } from '../config/model.js';
import { PlanError } from '../errors.js';
import type { Shape } from './types.js';

/**
 * The shapes the CPU kernels can take, checked when a plan targets the CPU. The attention keeps
 * its per-tile state on the stack of the thread that runs it (templates/include/mc_cpu.hpp,
 * attention_tile: qs, o, pr, mx, sum and pos for TQ × GROUP rows, TQ = max(1, 64 / GROUP); the
 * portable path's acc[GROUP][HEAD_DIM] is smaller). A config whose query heads per KV head times
 * head_dim outgrows a thread's stack would crash the first forward pass (a segfault, no message):
 * it is refused here, naming the fields.
 */

/** Stack bytes the attention state may take: an eighth of glibc's usual 8 MiB thread stack, so that deep frames and small stacks keep room. */
export const CPU_ATTENTION_STACK_MAX = 1 << 20;

/** Bytes of attention_tile's arrays for `group` query heads per KV head of `headDim`. */
export function cpuAttentionStackBytes(headDim: number, group: number): number {
  const rows = Math.max(1, Math.floor(64 / group)) * group;
  return rows * (2 * headDim * 4 + 16 * 4 + 3 * 4);
}

export function checkCpuShapes(model: ModelConfig, shape: Shape, tp: number): void {
  const group = shape.n_heads / shape.n_kv_heads;
  const bytes = cpuAttentionStackBytes(model.head_dim, group);
  if (bytes <= CPU_ATTENTION_STACK_MAX) return;
  throw new PlanError(model.source, 'head_dim',
    `head_dim = ${model.head_dim} with ${group} query heads a KV head${tp > 1 ? ' on a rank' : ''}: the CPU attention would keep ${(bytes / 2 ** 20).toFixed(1)} MiB of state on a thread's stack, more than the ${CPU_ATTENTION_STACK_MAX / 2 ** 20} MiB it allows itself`,
    `use fewer query heads a KV head (more n_kv_heads) or a smaller head_dim`);
}
