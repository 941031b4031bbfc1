/**
 * (a') Every kernel on its own: test/gpu/kernels.cu compiled against one config's rendered sources
 * (float64 references, fresh random inputs, poisoned outputs), run, its lines collected.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { execa } from 'execa';
import { writeSources } from '../../compiler/build/cache.js';
import { gencodeFlags, nvccCommand } from '../../compiler/build/nvcc.js';
import { hashFiles } from '../../compiler/emit/render.js';
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

/** What a kernel checker is built from: the config's rendered sources and test/gpu/kernels.cu. */
export function kernelCheckHash(c: KernelCase): string {
  const checker = { path: 'test/gpu/kernels.cu', content: readFileSync(join(packageRoot(), 'test', 'gpu', 'kernels.cu'), 'utf8') };
  return hashFiles([...renderCudaSources(kernelPlan(c)).files, checker]);
}

/** The prebuilt checker of case c, if the manifest has one built from today's sources for these GPUs; else undefined (build it). */
export function prebuiltKernelCheck(c: KernelCase, prebuilt: ReturnType<typeof readManifest>, archs: readonly string[]): string | undefined {
  const key = `${c.config}.${c.dtype}`, pre = prebuilt?.manifest.kernelChecks[key];
  if (pre === undefined || prebuilt!.manifest.archs.join(',') !== archs.join(',') || prebuilt!.manifest.kernelCheckSources?.[key] !== kernelCheckHash(c)) return undefined;
  const path = isAbsolute(pre) ? pre : join(prebuilt!.dir, pre);
  return existsSync(path) ? path : undefined;
}

export interface KernelCheckResult { config: string; dtype: string; passed: boolean; lines: string[] }

export async function runKernelCheck(c: KernelCase, options: { workDir: string; archs: readonly string[]; prebuilt?: ReturnType<typeof readManifest> }): Promise<KernelCheckResult> {
  const binary = prebuiltKernelCheck(c, options.prebuilt, options.archs) ?? await buildKernelCheck(c, options.workDir, options.archs);
  const run = await execa(binary, [], { reject: false, all: true, env: { OMP_NUM_THREADS: String(availableParallelism()) } });  // the float64 reference uses every core
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
