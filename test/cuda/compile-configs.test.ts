/**
 * CI (no GPU): every shipped config renders and compiles for sm_80 and sm_90a, each with one nvcc
 * call holding both -gencode targets, at most two nvcc at a time (CI machines have 2 cores).
 *
 * The two configs whose sources generated/ holds (Mistral-7B, Mixtral-8x7B) build as a user's build
 * does (buildPlanLibrary, the product's flags). The others take the same nvcc command with the
 * device code optimised less (-Xcicc -O1 -Xptxas -O1) and the host code not at all (-O0 in place of
 * -O3, the host compiler's level): the same front ends, code generation and PTX assembly (every
 * inline PTX instruction, for both GPUs), and no error that any pass reports is skipped, at under
 * half the time (49 s → 21 s for the 7B on CI's machine with the device flags; the host compile
 * then 7.6 s → 2.2 s of it). What differs between configs is their constants, which the front ends
 * and the assembler judge at any level.
 */
import { mkdtempSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { buildPlanLibrary } from '../../compiler/build/build.js';
import { writeSources } from '../../compiler/build/cache.js';
import { nvccCommand, nvccFlags } from '../../compiler/build/nvcc.js';
import { loadModelConfig } from '../../compiler/config/load.js';
import { renderCudaSources } from '../../compiler/emit/render-cuda.js';
import { packageRoot } from '../../compiler/paths.js';
import { buildPlan } from '../../compiler/plan/build-plan.js';
import { kernelNodes } from '../../compiler/plan/kernels.js';
import type { Dtype } from '../../compiler/plan/types.js';
import { hasNvcc, limiter } from './helpers.js';

const CONFIGS = readdirSync(join(packageRoot(), 'configs', 'models'), { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort();
/** Built with the product's flags, through the product's build: the configs of generated/. */
const AS_SHIPPED = new Set(['mistral-7b-v0.1', 'mixtral-8x7b']);
/** Every config in bf16 (the checkpoints' dtype), and the other two dtypes once each. */
/** And the NCCL path of tensor parallelism: a dense config with a window and a MoE config at TP 2. */
const CASES: Array<{ config: string; dtype: Dtype; tp: 1 | 2 }> = [
  ...CONFIGS.map((config) => ({ config, dtype: 'bf16' as Dtype, tp: 1 as const })),
  { config: 'tiny-moe', dtype: 'f32', tp: 1 }, { config: 'tiny-dense', dtype: 'f16', tp: 1 },
  { config: 'tiny-dense', dtype: 'bf16', tp: 2 }, { config: 'tiny-moe', dtype: 'bf16', tp: 2 },
];
const ARCHS = ['sm_90a', 'sm_80'];
const work = mkdtempSync(join(tmpdir(), 'mc-cuda-compile-'));
const slot = limiter(2);
const started = performance.now();

afterAll(() => {
  console.log(`compiled ${CASES.length} CUDA libraries for ${ARCHS.join(' + ')} in ${((performance.now() - started) / 1000).toFixed(0)} s (2 at a time)`);
  rmSync(work, { recursive: true, force: true });
});

describe.skipIf(!hasNvcc())('every shipped config compiles for the GPUs the device profiles name', () => {
  it.concurrent.each(CASES)('$config in $dtype at --tp $tp builds for sm_90a and sm_80 in one nvcc call', async ({ config, dtype, tp }) => {
    const plan = buildPlan(loadModelConfig(join(packageRoot(), 'configs', 'models', config)), { target: 'cuda', dtype, tp });
    if (AS_SHIPPED.has(config) && tp === 1 && dtype === 'bf16') {
      const result = await slot(() => buildPlanLibrary(plan, { cacheDir: join(work, 'cache'), archs: ARCHS }));
      expect(result.library).toMatch(/\.so$/);
      return;
    }
    const dir = join(work, plan.key);
    mkdirSync(dir, { recursive: true });
    writeSources(dir, renderCudaSources(plan).files);
    const args = [...nvccFlags(ARCHS).map((f) => (f === '-O3' ? '-O0' : f)), '-Xcicc', '-O1', '-Xptxas', '-O1', 'model.cu', '-o', 'libmodel.so'];
    expect(args, 'the product\'s host level (-O3) is what this case lowers').toContain('-O0');
    const run = await slot(async () => await execa(nvccCommand(), args, { cwd: dir, reject: false, all: true }));
    expect(run.exitCode, `${nvccCommand()} ${args.join(' ')} in ${dir}:\n${String(run.all)}`).toBe(0);
    expect(statSync(join(dir, 'libmodel.so')).size).toBeGreaterThan(0);
  }, 300_000);
});

describe('CUDA sources', () => {
  it('are byte-identical when the same plan is rendered twice', () => {
    const plan = buildPlan(loadModelConfig(join(packageRoot(), 'configs', 'models', 'mixtral-8x7b')), { target: 'cuda' });
    const a = renderCudaSources(plan), b = renderCudaSources(buildPlan(loadModelConfig(join(packageRoot(), 'configs', 'models', 'mixtral-8x7b')), { target: 'cuda' }));
    expect(a.hash).toBe(b.hash);
    expect(a.files).toEqual(b.files);
  });

  it('hold no absolute path of this machine and no date', () => {
    const plan = buildPlan(loadModelConfig(join(packageRoot(), 'configs', 'models', 'tiny-window-list')), { target: 'cuda' });
    for (const f of renderCudaSources(plan).files) {
      expect(f.content, f.path).not.toContain(packageRoot());
      expect(f.content, f.path).not.toMatch(/\b20\d\d-\d\d-\d\d\b/);
    }
  });

  it('have one kernel header per fused kernel of the plan, named after it', () => {
    const plan = buildPlan(loadModelConfig(join(packageRoot(), 'configs', 'models', 'tiny-moe')), { target: 'cuda' });
    const kernels = new Set(kernelNodes(plan).map((k) => k.kernel));
    const headers = renderCudaSources(plan).files.map((f) => f.path).filter((p) => p.startsWith('kernels/'));
    expect(headers.sort()).toEqual([...kernels].map((k) => `kernels/${k}.cuh`).sort());
  });
});
