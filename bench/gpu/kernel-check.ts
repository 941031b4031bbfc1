/**
 * (a') Every kernel on its own: test/gpu/kernels.cu compiled against one config's rendered sources
 * (float64 references, fresh random inputs, poisoned outputs), run, its lines collected.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { execa } from 'execa';
import { writeSources } from '../../compiler/build/cache.js';
import { gencodeFlags, nvccCommand } from '../../compiler/build/nvcc.js';
import { renderCudaSources } from '../../compiler/emit/render-cuda.js';
import { packageRoot } from '../../compiler/paths.js';
import { kernelPlan, type KernelCase } from './cases.js';
import type { readManifest } from './libraries.js';

const WEIGHT_TYPE = { f32: 'float', bf16: 'mc::bf16', f16: 'mc::f16' } as const;

/** Compiles the kernel checker for one config and dtype into dir; returns the binary. */
export async function buildKernelCheck(c: KernelCase, dir: string, archs: readonly string[]): Promise<string> {
  const src = join(dir, `src-${c.config}-${c.dtype}`);
  mkdirSync(src, { recursive: true });
  writeSources(src, renderCudaSources(kernelPlan(c)).files);
  const binary = join(dir, `kernels-${c.config}-${c.dtype}`);
  await execa(nvccCommand(), [
    '-std=c++17', '-O3', '--expt-relaxed-constexpr', '-diag-suppress', '177', '-Xcompiler', '-fopenmp', ...gencodeFlags(archs),
    '-I', src, `-DMC_WEIGHT=${WEIGHT_TYPE[c.dtype]}`, join(packageRoot(), 'test', 'gpu', 'kernels.cu'), '-o', binary,
  ]);
  return binary;
}

export interface KernelCheckResult { config: string; dtype: string; passed: boolean; lines: string[] }

export async function runKernelCheck(c: KernelCase, options: { workDir: string; archs: readonly string[]; prebuilt?: ReturnType<typeof readManifest> }): Promise<KernelCheckResult> {
  const pre = options.prebuilt?.manifest.kernelChecks[`${c.config}.${c.dtype}`];
  const prePath = pre === undefined ? undefined : isAbsolute(pre) ? pre : join(options.prebuilt!.dir, pre);
  const binary = prePath !== undefined && existsSync(prePath) ? prePath : await buildKernelCheck(c, options.workDir, options.archs);
  const run = await execa(binary, [], { reject: false, all: true, env: { OMP_NUM_THREADS: '8' } });
  const lines = String(run.all ?? '').split('\n').filter((l) => l.trim() !== '');
  return { config: c.config, dtype: c.dtype, passed: run.exitCode === 0, lines };
}

/** Device-to-device copy bandwidth in GB/s (read + write), measured by the checker binary. */
export async function copyBandwidth(binary: string): Promise<number> {
  const run = await execa(binary, ['--copy-bandwidth']);
  const m = /copy_bandwidth_gbs ([\d.]+)/.exec(run.stdout);
  if (m === null) throw new Error(`no bandwidth in: ${run.stdout}`);
  return Number(m[1]);
}
