/** The cuda row of the backends table and the --arch option, without compiling anything. */
import { describe, expect, it } from 'vitest';
import { BACKENDS } from '../../compiler/build/backends.js';
import { buildPlanLibrary } from '../../compiler/build/build.js';
import { DEFAULT_ARCHS, gencodeFlags, nvccFlags, parseArchs } from '../../compiler/build/nvcc.js';
import { loadModelConfig } from '../../compiler/config/load.js';
import { packageRoot } from '../../compiler/paths.js';
import { buildPlan } from '../../compiler/plan/build-plan.js';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hasNvcc } from './helpers.js';

const tiny = (target: 'cpu' | 'cuda') => buildPlan(loadModelConfig(join(packageRoot(), 'configs', 'models', 'tiny-dense')), { target });

describe('nvcc flags', () => {
  it('default to Hopper (sm_90a) and Ampere (sm_80), one -gencode each in the arch=compute_X,code=sm_X form', () => {
    expect(DEFAULT_ARCHS).toEqual(['sm_90a', 'sm_80']);
    expect(gencodeFlags(DEFAULT_ARCHS)).toEqual(['-gencode=arch=compute_90a,code=sm_90a', '-gencode=arch=compute_80,code=sm_80']);
  });

  it('build one shared library with position-independent host code and the CUDA runtime linked statically', () => {
    const flags = nvccFlags(['sm_90a']);
    expect(flags).toEqual(expect.arrayContaining(['-shared', '-O3', '-cudart=static']));
    expect(flags.join(' ')).toContain('-Xcompiler -fPIC');
  });

  it('are part of the cache key: another arch list gives other flags for the same plan', () => {
    const cuda = BACKENDS.cuda!;
    expect(cuda.flags(tiny('cuda'), { archs: ['sm_80'] })).not.toEqual(cuda.flags(tiny('cuda'), { archs: ['sm_90a', 'sm_80'] }));
    expect(cuda.entry).toBe('model.cu');
  });
});

describe('--arch', () => {
  it('parses a comma-separated list, keeping its order and dropping repeats', () => {
    expect(parseArchs('sm_90a, sm_80,sm_90a')).toEqual(['sm_90a', 'sm_80']);
  });

  it('names a malformed architecture and the form to use', () => {
    expect(() => parseArchs('hopper')).toThrow(/"hopper" is not a GPU architecture.*sm_90a/);
  });

  it('takes the newer architectures by their names (Blackwell\'s sm_100a, sm_103f, sm_120), and no "a" or "f" variant that does not exist', () => {
    expect(parseArchs('sm_100a,sm_103f,sm_120,sm_89')).toEqual(['sm_100a', 'sm_103f', 'sm_120', 'sm_89']);
    expect(() => parseArchs('sm_80a')).toThrow(/^--arch: sm_80a does not exist: "a" variants begin at sm_90a; use sm_80$/);
    expect(() => parseArchs('sm_90f')).toThrow(/^--arch: sm_90f does not exist: "f" variants begin at sm_100f; use sm_90$/);
  });

  it.skipIf(!hasNvcc())('refuses, before compiling, an architecture this nvcc does not build, listing those it does', async () => {
    const started = performance.now();
    await expect(buildPlanLibrary(tiny('cuda'), { archs: ['sm_99'], cacheDir: mkdtempSync(join(tmpdir(), 'mc-arch-')) }))
      .rejects.toThrow(/^--arch: sm_99 is not built by this nvcc \(nvcc --list-gpu-code: sm_\d+( sm_\d+)*\); pick one of those/);
    expect(performance.now() - started).toBeLessThan(20_000);
  });

  it('refuses GPUs older than sm_80, which lack the bf16 tensor-core instructions the kernels use', () => {
    expect(() => parseArchs('sm_75')).toThrow(/sm_75 is older than sm_80/);
  });

  it('applies to cuda builds only', async () => {
    await expect(buildPlanLibrary(tiny('cpu'), { archs: ['sm_90a'] })).rejects.toThrow(/--arch: applies to --target cuda only/);
  });
});
