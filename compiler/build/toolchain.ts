import { readFileSync } from 'node:fs';
import { execa } from 'execa';
import { BuildError } from './errors.js';

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

export function missingCompiler(compiler: string, err: unknown): BuildError {
  const code = (err as { code?: string }).code;
  if (code === 'ENOENT') {
    return new BuildError(compiler, undefined, 'compiler not found on PATH', compiler.includes('nvcc')
      ? 'install the CUDA toolkit (nvcc) or put it on PATH'
      : 'install g++ (e.g. apt-get install g++) or point $CXX at a C++20 compiler');
  }
  return new BuildError(compiler, undefined, `could not run (${(err as Error).message.split('\n')[0]})`, 'check that the compiler works: run it with --version');
}
