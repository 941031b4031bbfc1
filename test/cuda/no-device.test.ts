/**
 * On a machine without a usable GPU (CI), loading a CUDA model fails with one clear line, and the
 * CPU path of the same process keeps working.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../../compiler/cli/main.js';
import { EnvironmentError } from '../../runtime/errors.js';
import { loadModel, type LoadProgress } from '../../runtime/model.js';
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
    expect(message).toMatch(/^--target cuda: no CUDA device: cudaGetDeviceCount returned (35|100) \([^)]+\); run where an NVIDIA GPU and its driver are visible \(nvidia-smi lists it\), or use --target cpu$/);
  }, 300_000);

  it('the CLI prints that line as an error (not an internal one) and exits 1', async () => {
    const err: string[] = [];
    const spy = vi.spyOn(console, 'error').mockImplementation((...a) => void err.push(a.join(' ')));
    const quiet = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      const code = await main(['generate', '--model', model.dir, '--target', 'cuda', '--cache', ws.cacheDir, '--tokens', '1,2,3', '--max-tokens', '2']);
      expect(code).toBe(1);
    } finally {
      spy.mockRestore();
      quiet.mockRestore();
    }
    expect(err.join('\n')).toMatch(/^mistral-compile: error: --target cuda: no CUDA device: .*or use --target cpu$/);
  }, 300_000);

  it('fails on the device check, before it reads the checkpoint (no reading progress)', async () => {
    const events: LoadProgress[] = [];
    const message = await errorMessage(() => loadModel(model.dir, { target: 'cuda', cacheDir: ws.cacheDir, onProgress: (e) => events.push(e) }));
    expect(message).toMatch(/^--target cuda: no CUDA device: /);
    expect(events.some((e) => e.stage === 'read')).toBe(false);
    expect(events.some((e) => e.stage === 'cached' || e.stage === 'done')).toBe(true);  // the library was built (or found) first
  }, 300_000);

  it('a tensor-parallel CUDA model (--tp 2, NCCL) also builds and then fails with "no CUDA device"', async () => {
    const message = await errorMessage(() => loadModel(model.dir, { target: 'cuda', tp: 2, cacheDir: ws.cacheDir }));
    expect(message).toMatch(/^--target cuda: no CUDA device: cudaGetDeviceCount returned (35|100) \(/);
  }, 300_000);

  it('a malformed MC_CUDA_* variable is named before the device check, with what it accepts', async () => {
    const cases: Array<[string, string, RegExp]> = [
      ['MC_CUDA_PREFETCH_MB', '8MB', /^environment: MC_CUDA_PREFETCH_MB: "8MB" is not N or N,M whole MiB; unset it, or set e\.g\. 8 or 8,24$/],
      ['MC_CUDA_GEMM', 'wgma', /^environment: MC_CUDA_GEMM: "wgma" is not wgmma, mma or wgmma-all; unset it, or set one of those$/],
      ['MC_CUDA_A16', 'off\n', /^environment: MC_CUDA_A16: "off\?" is not a row count from 0 to 65536; unset it, or set 0 to read A through the Op, or N to narrow it from N rows$/],
      ['MC_CUDA_A16', '65537', /^environment: MC_CUDA_A16: "65537" is not a row count from 0 to 65536; /],
      ['MC_CUDA_A16', '-1', /^environment: MC_CUDA_A16: "-1" is not a row count/],
      ['MC_CUDA_GEMM_DEEP', 'yes', /^environment: MC_CUDA_GEMM_DEEP: "yes" is not 1 or 0; unset it, or set 0 to keep the 4-stage small tile for grids smaller than the GPU$/],
      ['MC_CUDA_PDL', 'yes', /^environment: MC_CUDA_PDL: "yes" is not gemv, all or off; unset it, or set gemv \(the default\)$/],
      ['MC_CUDA_PDL_TRIGGER', 'early', /^environment: MC_CUDA_PDL_TRIGGER: "early" is not exit or last-rows; unset it, or set exit \(the default\)$/],
      ['MC_CUDA_DIAG_SKIP', 'attention', /^environment: MC_CUDA_DIAG_SKIP: "attention" is not all or a comma-separated list of this model's kernels \(embedding_lookup, .*, rmsnorm_output\); unset it, or set e\.g\. attention_gqa_window \(for timing only: the logits are then wrong\)$/],
    ];
    for (const [name, value, pattern] of cases) {
      process.env[name] = value;
      try {
        const error = await loadModel(model.dir, { target: 'cuda', cacheDir: ws.cacheDir }).then(() => null, (e: unknown) => e);
        expect(error).toBeInstanceOf(EnvironmentError);
        expect((error as Error).message).toMatch(pattern);
      } finally {
        delete process.env[name];
      }
    }
    // Empty is unset: the load goes on to the device check.
    process.env.MC_CUDA_PREFETCH_MB = '';
    try {
      expect(await errorMessage(() => loadModel(model.dir, { target: 'cuda', cacheDir: ws.cacheDir }))).toMatch(/^--target cuda: no CUDA device: /);
    } finally {
      delete process.env.MC_CUDA_PREFETCH_MB;
    }
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
