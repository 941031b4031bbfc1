/**
 * On a machine without a usable GPU (CI), loading a CUDA model fails at once with one clear line
 * (the driver is asked before anything is built), the library built anyway reports the same in its
 * own check, and the CPU path of the same process keeps working.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../../compiler/cli/main.js';
import { EnvironmentError } from '../../runtime/errors.js';
import { buildPlanLibrary } from '../../compiler/build/build.js';
import { loadModelConfig } from '../../compiler/config/load.js';
import { buildPlan } from '../../compiler/plan/build-plan.js';
import { loadModel, withMachineErrors, type LoadProgress } from '../../runtime/model.js';
import type { NativeCompiledLibrary } from '../../runtime/native.js';
import { loadNativeAddon } from '../../runtime/native-loader.js';
import { createWorkspace, errorMessage, tokensFor, writeModelDir, type ModelDir, type Workspace } from '../e2e/helpers.js';
import { hasCudaDriver, hasGpu, hasNvcc } from './helpers.js';

let ws: Workspace;
let model: ModelDir;
beforeAll(async () => {
  ws = await createWorkspace('cuda-no-device');
  model = await writeModelDir(ws.root, 'tiny-dense', { shipped: 'tiny-dense' }, { seed: 4, dtype: 'bf16' });
});
afterAll(async () => {
  await ws?.remove();
});

/**
 * The tiny model's CUDA library, built once (nvcc runs without a GPU) and loaded into this process.
 * For sm_80 alone: what these tests check is host code, the same for every GPU (compile-configs
 * builds both GPUs' code of every config).
 */
let tinyLibrary: Promise<NativeCompiledLibrary> | undefined;
function buildTinyLibrary(): Promise<NativeCompiledLibrary> {
  tinyLibrary ??= (async () => {
    const plan = buildPlan(loadModelConfig(model.dir), { target: 'cuda', dtype: 'bf16', tp: 1, maxTokens: 512 });
    const built = await buildPlanLibrary(plan, { cacheDir: ws.cacheDir, archs: ['sm_80'] });
    return new (loadNativeAddon().CompiledLibrary)(built.library);
  })();
  return tinyLibrary;
}

describe.skipIf(hasGpu() || hasCudaDriver() || !hasNvcc())('without a GPU or its driver', () => {
  const NO_DRIVER = /^--target cuda: no CUDA device: the NVIDIA driver's libcuda\.so\.1 cannot be loaded \(libcuda\.so\.1: cannot open shared object file: No such file or directory\); run where an NVIDIA GPU and its driver are visible \(nvidia-smi lists it\), or use --target cpu$/;

  it('loadModel(dir, { target: "cuda" }) fails at once with "no CUDA device", before it builds or reads anything', async () => {
    const events: LoadProgress[] = [];
    const started = performance.now();
    const message = await errorMessage(() => loadModel(model.dir, { target: 'cuda', cacheDir: ws.cacheDir, onProgress: (e) => events.push(e) }));
    expect(message).toMatch(NO_DRIVER);
    // Only the config's notes: no render, compile or read (nvcc's minutes are not spent on a load that cannot succeed).
    expect(events.map((e) => e.stage)).toEqual(['config']);
    expect(performance.now() - started).toBeLessThan(10_000);
  }, 60_000);

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
  }, 60_000);

  it('a tensor-parallel CUDA model (--tp 2, NCCL) fails the same way', async () => {
    expect(await errorMessage(() => loadModel(model.dir, { target: 'cuda', tp: 2, cacheDir: ws.cacheDir }))).toMatch(NO_DRIVER);
  }, 60_000);

  it('the library built without a GPU (build needs none) says "no CUDA device" in its own check, with the driver\'s error code', async () => {
    const library = await buildTinyLibrary();
    expect(() => withMachineErrors('cuda', () => library.checkDevice(0, 0)))
      .toThrow(/^--target cuda: no CUDA device: cudaGetDeviceCount returned (35|100) \([^)]+\); run where an NVIDIA GPU and its driver are visible \(nvidia-smi lists it\), or use --target cpu$/);
  }, 300_000);

  it('the library names a malformed MC_CUDA_* variable before its device check, with what it accepts', async () => {
    const library = await buildTinyLibrary();
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
        let error: unknown = null;
        try {
          withMachineErrors('cuda', () => library.checkDevice(0, 0));
        } catch (e) {
          error = e;
        }
        expect(error).toBeInstanceOf(EnvironmentError);
        expect((error as Error).message).toMatch(pattern);
      } finally {
        delete process.env[name];
      }
    }
    // Empty is unset: the check goes on to the device.
    process.env.MC_CUDA_PREFETCH_MB = '';
    try {
      expect(() => withMachineErrors('cuda', () => library.checkDevice(0, 0))).toThrow(/^--target cuda: no CUDA device: /);
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
