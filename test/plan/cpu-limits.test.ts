import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModelConfig } from '../../compiler/config/load.js';
import { normalizeParams } from '../../compiler/config/normalize.js';
import { PlanError } from '../../compiler/errors.js';
import { buildPlan } from '../../compiler/plan/build-plan.js';
import { CPU_ATTENTION_STACK_MAX, cpuAttentionStackBytes } from '../../compiler/plan/cpu-limits.js';
import { DTYPES, TP_SIZES } from '../../compiler/plan/types.js';
import { loadModel } from '../../runtime/model.js';
import { createWorkspace, tokensFor, writeModelDir, type Workspace } from '../e2e/helpers.js';

const MODELS = join(import.meta.dirname, '../../configs/models');
const shipped = readdirSync(MODELS).filter((d) => existsSync(join(MODELS, d, 'params.json'))).sort();
/** One KV head for many query heads of a wide head_dim: the attention state grows with both. */
const wide = (n_heads: number, head_dim: number) => ({ dim: 8, n_layers: 1, head_dim, hidden_dim: 4, n_heads, n_kv_heads: 1, norm_eps: 1e-5, vocab_size: 16, rope_theta: 1e6, max_seq_len: 16 });

function cpuPlanError(params: object): string | null {
  const model = normalizeParams(params, '/m/params.json');
  try {
    buildPlan(model, { target: 'cpu', dtype: 'f32', tp: 1 });
    return null;
  } catch (e) {
    expect(e).toBeInstanceOf(PlanError);
    return (e as Error).message;
  }
}

describe('the shapes the CPU kernels can take (checked when a plan targets the CPU)', () => {
  it('every shipped config plans for the CPU at every dtype and TP size it shards to', () => {
    for (const name of shipped) {
      const model = loadModelConfig(join(MODELS, name));
      for (const dtype of DTYPES) {
        for (const tp of TP_SIZES) {
          if (model.n_heads % tp !== 0 || model.hidden_dim % tp !== 0 || model.vocab_size % tp !== 0) continue;
          expect(() => buildPlan(model, { target: 'cpu', dtype, tp }), `${name} ${dtype} tp${tp}`).not.toThrow();
        }
      }
    }
  });

  it('1024 query heads of head_dim 1024 on one KV head (8 MiB of attention state on a thread\'s stack: a segfault) are refused, naming the fields', () => {
    expect(cpuAttentionStackBytes(1024, 1024)).toBeGreaterThan(8 * 2 ** 20);
    expect(cpuPlanError(wide(1024, 1024))).toBe('/m/params.json: head_dim: head_dim = 1024 with 1024 query heads a KV head: the CPU attention would keep 8.1 MiB of state on a thread\'s stack, more than the 1 MiB it allows itself; use fewer query heads a KV head (more n_kv_heads) or a smaller head_dim');
    expect(cpuPlanError(wide(128, 1016))).toMatch(/^\/m\/params\.json: head_dim: head_dim = 1016 with 128 query heads a KV head: the CPU attention would keep 1\.0 MiB/);
  });

  describe('the largest accepted state runs', () => {
    let ws: Workspace;
    beforeAll(async () => {
      ws = await createWorkspace('cpu-limits');
    });
    afterAll(async () => {
      await ws?.remove();
    });

    it('128 query heads of head_dim 1008 on one KV head (just under the limit): finite logits on the CPU, prefill and decode', async () => {
      expect(cpuAttentionStackBytes(1008, 128)).toBeLessThanOrEqual(CPU_ATTENTION_STACK_MAX);
      expect(cpuAttentionStackBytes(1016, 128)).toBeGreaterThan(CPU_ATTENTION_STACK_MAX);
      const source = await writeModelDir(ws.root, 'wide', { params: wide(128, 1008) }, { seed: 940, dtype: 'f32' });
      const model = await loadModel(source.dir, { cacheDir: ws.cacheDir });
      try {
        const tokens = tokensFor(source, 6, 941);
        const rows = [...await model.forward(tokens.slice(0, 5), 0), ...await model.forward(tokens.slice(5), 5)];
        expect(rows).toHaveLength(6);
        for (const row of rows) expect(row.every(Number.isFinite)).toBe(true);
      } finally {
        model.close();
      }
    }, 120_000);
  });
});
