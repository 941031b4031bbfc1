import { readFileSync } from 'node:fs';
import { execa } from 'execa';
import { BuildError } from './errors.js';
import { nvccCommand } from './nvcc.js';

/** The C++ compiler: $CXX when set, else g++. */
export function cxxCommand(): string {
  return process.env.CXX && process.env.CXX.trim() !== '' ? process.env.CXX.trim() : 'g++';
}

/** Flags of a CPU build. -march=native: the library is built on, and for, the machine that runs it. */
export const CPU_FLAGS = ['-std=c++20', '-O3', '-march=native', '-fopenmp', '-fPIC', '-shared', '-fvisibility=hidden', '-Wall', '-Wextra'];

const identityCache = new Map<string, string>();

/**
 * What makes a build's output differ beyond its sources: the compiler's whole version text and,
 * for a -march=native CPU build, this CPU's feature flags (a CUDA build does not depend on them, so
 * its libraries can be built on one machine and used on another). Part of the cache key.
 */
export async function toolchainIdentity(compiler: string, cpuFeatures: boolean): Promise<string> {
  const key = `${compiler}\0${cpuFeatures}`;
  const cached = identityCache.get(key);
  if (cached !== undefined) return cached;
  let version: string;
  try {
    version = (await execa(compiler, ['--version'])).stdout.trim();
  } catch (err) {
    throw missingCompiler(compiler, err);
  }
  let cpu = '';
  if (cpuFeatures) {
    try {
      cpu = readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('flags')) ?? '';
    } catch {
      /* not Linux: the compiler version alone keys the cache */
    }
  }
  const identity = `${version}\n${cpu}`;
  identityCache.set(key, identity);
  return identity;
}

/** The two tools a build runs, each with the variable that overrides it and what installs it. */
const TOOLS = {
  cxx: { env: 'CXX', what: 'a C++20 compiler', install: 'install g++ (e.g. apt-get install g++)' },
  nvcc: { env: 'NVCC', what: 'nvcc', install: 'install the CUDA toolkit (nvcc)' },
} as const;

/**
 * Which tool `compiler` is, by the commands the backends take it from (cxxCommand, nvccCommand), not
 * by its name: $NVCC may point anywhere, and $CXX at a file whose name holds "nvcc".
 */
function toolOf(compiler: string): (typeof TOOLS)[keyof typeof TOOLS] {
  return compiler === nvccCommand() && compiler !== cxxCommand() ? TOOLS.nvcc : TOOLS.cxx;
}

export function missingCompiler(compiler: string, err: unknown): BuildError {
  const code = (err as { code?: string }).code;
  if (code === 'ENOENT') {
    const tool = toolOf(compiler);
    const set = process.env[tool.env]?.trim();
    if (set === undefined || set === '') {
      return new BuildError(compiler, undefined, `${tool.what} not found on PATH`, `${tool.install}, or set $${tool.env} to its path`);
    }
    // The build runs $CXX/$NVCC as one program, without a shell: "ccache g++" names no file.
    if (/\s/.test(set)) {
      return new BuildError(`$${tool.env}=${JSON.stringify(set)}`, undefined, `is a command with arguments, but $${tool.env} must be a single executable (a path, or a name on PATH)`,
        `set ${tool.env} to the compiler alone, e.g. ${tool.env}=${tool === TOOLS.nvcc ? 'nvcc' : 'g++'}${tool === TOOLS.cxx ? ' (for ccache, its compiler link such as /usr/lib/ccache/g++)' : ''}`);
    }
    return new BuildError(`$${tool.env}=${set}`, undefined, set.includes('/') ? 'no such file' : 'not found on PATH',
      `point $${tool.env} at ${tool.what}, or unset it to use ${tool === TOOLS.nvcc ? 'nvcc' : 'g++'} on PATH`);
  }
  return new BuildError(compiler, undefined, `could not run (${(err as Error).message.split('\n')[0]})`, 'check that the compiler works: run it with --version');
}
