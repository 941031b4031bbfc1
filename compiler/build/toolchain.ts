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
 * What makes a build's output differ beyond its sources: the compiler's version and, for
 * -march=native, this CPU's feature flags. Part of the cache key.
 */
export async function toolchainIdentity(compiler: string): Promise<string> {
  const cached = identityCache.get(compiler);
  if (cached !== undefined) return cached;
  let version: string;
  try {
    version = (await execa(compiler, ['--version'])).stdout.split('\n')[0] ?? '';
  } catch (err) {
    throw missingCompiler(compiler, err);
  }
  let cpu = '';
  try {
    cpu = readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('flags')) ?? '';
  } catch {
    /* not Linux: the compiler version alone keys the cache */
  }
  const identity = `${version}\n${cpu}`;
  identityCache.set(compiler, identity);
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
