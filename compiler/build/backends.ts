import { renderCpuSources, type RenderOptions, type RenderedSources } from '../emit/render.js';
import { renderCudaSources } from '../emit/render-cuda.js';
import type { Plan, Target } from '../plan/types.js';
import { checkArchsSupported, DEFAULT_ARCHS, nvccCommand, nvccFlags } from './nvcc.js';
import { CPU_FLAGS, cxxCommand, type ToolchainNeeds } from './toolchain.js';

/** Build options that reach the compiler flags. */
export interface FlagOptions {
  /** GPU architectures (cuda only), e.g. ['sm_90a', 'sm_80']. */
  archs?: readonly string[];
}

/**
 * What differs between targets at build time, in one table: how sources are rendered, which
 * compiler builds them, with which flags, from which entry file.
 */
export interface Backend {
  render(plan: Plan, options?: RenderOptions): RenderedSources;
  compiler(): string;
  flags(plan: Plan, options: FlagOptions): string[];
  /** The translation unit handed to the compiler (relative to the source directory). */
  entry: string;
  /** What of the toolchain beyond the compiler's version the output depends on, and so keys the cache. */
  toolchain: ToolchainNeeds;
  /** Checks, before the compile, that the compiler can build what the options ask (nvcc: the --arch list). */
  checkCompiler?(compiler: string, options: FlagOptions): Promise<void>;
}

export const BACKENDS: Partial<Record<Target, Backend>> = {
  cpu: { render: renderCpuSources, compiler: cxxCommand, flags: () => CPU_FLAGS, entry: 'model.cpp', toolchain: { cpuSpecific: true, hostCompiler: false } },
  cuda: { render: renderCudaSources, compiler: nvccCommand, flags: (_, o) => nvccFlags(o.archs ?? DEFAULT_ARCHS), entry: 'model.cu', toolchain: { cpuSpecific: false, hostCompiler: true },
    checkCompiler: (nvcc, o) => checkArchsSupported(nvcc, o.archs ?? DEFAULT_ARCHS) },
};
