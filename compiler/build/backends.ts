import { renderCpuSources, type RenderedSources } from '../emit/render.js';
import type { Plan, Target } from '../plan/types.js';
import { CPU_FLAGS, cxxCommand } from './toolchain.js';

/**
 * What differs between targets at build time, in one table: how sources are rendered, which
 * compiler builds them, with which flags, from which entry file.
 */
export interface Backend {
  render(plan: Plan): RenderedSources;
  compiler(): string;
  flags(plan: Plan): string[];
  /** The translation unit handed to the compiler (relative to the source directory). */
  entry: string;
}

export const BACKENDS: Partial<Record<Target, Backend>> = {
  cpu: { render: renderCpuSources, compiler: cxxCommand, flags: () => CPU_FLAGS, entry: 'model.cpp' },
};
