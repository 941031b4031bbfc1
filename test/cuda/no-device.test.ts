/**
 * On a machine without a usable GPU (CI), loading a CUDA model fails with one clear line, and the
 * CPU path of the same process keeps working.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../../runtime/model.js';
import { createWorkspace, errorMessage, tokensFor, writeModelDir, type ModelDir, type Workspace } from '../e2e/helpers.js';
import { hasGpu, hasNvcc } from './helpers.js';

let ws: Workspace;
let model: ModelDir;
beforeAll(async () => {
  ws = await createWorkspace('cuda-no-device');
  model = await writeModelDir(ws.root, 'tiny-dense', { shipped: 'tiny-dense' }, { seed: 4, dtype: 'bf16' });
});
afterAll(async () => {
  await ws?.remove();
});

describe.skipIf(hasGpu() || !hasNvcc())('without a GPU', () => {
  it('loadModel(dir, { target: "cuda" }) builds the library, then fails with "no CUDA device" and the driver\'s error code', async () => {
    const message = await errorMessage(() => loadModel(model.dir, { target: 'cuda', cacheDir: ws.cacheDir }));
    expect(message).toMatch(/mc_create failed: no CUDA device: cudaGetDeviceCount returned (35|100) \(/);
  }, 300_000);

  it('a tensor-parallel CUDA model (--tp 2, NCCL) also builds and then fails with "no CUDA device"', async () => {
    const message = await errorMessage(() => loadModel(model.dir, { target: 'cuda', tp: 2, cacheDir: ws.cacheDir }));
    expect(message).toMatch(/mc_create failed: no CUDA device: cudaGetDeviceCount returned (35|100) \(/);
  }, 300_000);

  it('the CPU backend still loads and runs in the same process afterwards', async () => {
    const cpu = await loadModel(model.dir, { target: 'cpu', cacheDir: ws.cacheDir });
    try {
      const rows = await cpu.logits(tokensFor(model, 5, 1));
      expect(rows).toHaveLength(5);
      expect(rows.every((r) => r.every(Number.isFinite))).toBe(true);
    } finally {
      cpu.close();
    }
  }, 120_000);
});
