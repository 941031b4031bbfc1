import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { BuildError } from './errors.js';
import { nvccCommand } from './nvcc.js';

/** The C++ compiler: $CXX when set, else g++. */
export function cxxCommand(): string {
  return process.env.CXX && process.env.CXX.trim() !== '' ? process.env.CXX.trim() : 'g++';
}

/** Flags of a CPU build. -march=native: the library is built on, and for, the machine that runs it. */
export const CPU_FLAGS = ['-std=c++20', '-O3', '-march=native', '-fopenmp', '-fPIC', '-shared', '-fvisibility=hidden', '-Wall', '-Wextra'];

/** What a toolchain adds to the cache key, and the line build.json shows of it. */
export interface ToolchainIdentity {
  /** Everything hashed: versions, the variables that change what the compiler does, the CPU it targets. */
  text: string;
  /** The compiler's first --version line, for people (build.json). */
  version: string;
}

/** What of the toolchain a backend's output depends on. */
export interface ToolchainNeeds {
  /** -march=native: the code depends on this CPU (what the compiler makes of "native"). */
  cpuSpecific: boolean;
  /** nvcc: the host compiler it runs for the host code (NVCC_CCBIN, else g++ on PATH). */
  hostCompiler: boolean;
}

/**
 * Variables the compilers read that change their output without a flag: GCC's include and library
 * search paths and its tools' prefix, and nvcc's extra flags and host compiler. Their values are
 * hashed, so that e.g. one build with NVCC_PREPEND_FLAGS=-G does not serve device-debug code to
 * every later build.
 */
const GCC_VARIABLES = ['CPATH', 'CPLUS_INCLUDE_PATH', 'C_INCLUDE_PATH', 'LIBRARY_PATH', 'GCC_EXEC_PREFIX', 'COMPILER_PATH'];
const NVCC_VARIABLES = ['NVCC_PREPEND_FLAGS', 'NVCC_APPEND_FLAGS', 'NVCC_CCBIN'];

/** Untranslated: a compiler's --version text follows LANG, and a key must not (de_DE rebuilt everything). */
const C_LOCALE = { LC_ALL: 'C', LANGUAGE: '' };

const identityCache = new Map<string, ToolchainIdentity>();

/**
 * What makes a build's output differ beyond its sources and flags: the compiler's whole version
 * text, the variables above that are set, for nvcc its host compiler's version, and for a
 * -march=native CPU build what the compiler expands "native" to on this machine (its -march,
 * -mtune, ISA switches and cache sizes: a kernel update that changes /proc/cpuinfo's other flags
 * rebuilds nothing). A CUDA build does not depend on the CPU, so its libraries can be built on one
 * machine and used on another. Part of the cache key.
 */
export async function toolchainIdentity(compiler: string, needs: ToolchainNeeds): Promise<ToolchainIdentity> {
  const variables = needs.hostCompiler ? [...GCC_VARIABLES, ...NVCC_VARIABLES] : GCC_VARIABLES;
  const set = variables.filter((name) => process.env[name] !== undefined).map((name) => `${name}=${process.env[name]}`);
  const key = `${compiler}\0${needs.cpuSpecific}\0${needs.hostCompiler}\0${set.join('\0')}`;
  const cached = identityCache.get(key);
  if (cached !== undefined) return cached;
  let version: string;
  try {
    version = (await execa(compiler, ['--version'], { env: C_LOCALE })).stdout.trim();
  } catch (err) {
    throw missingCompiler(compiler, err);
  }
  const parts = [version, ...set];
  if (needs.hostCompiler) {
    // The host compiler as nvcc picks it: a -ccbin in NVCC_PREPEND/APPEND_FLAGS (conda's cuda-nvcc
    // sets one), else NVCC_CCBIN, else g++ on PATH; either may name the compiler or its directory.
    const ccbin = ccbinFromFlags(`${process.env.NVCC_PREPEND_FLAGS ?? ''} ${process.env.NVCC_APPEND_FLAGS ?? ''}`) ?? process.env.NVCC_CCBIN?.trim() ?? '';
    const host = ccbin === '' ? 'g++' : isDirectory(ccbin) ? join(ccbin, 'g++') : ccbin;
    // Not found: nvcc fails on its own with its message; the key just notes the absence.
    parts.push(`host compiler ${host}: ${await execa(host, ['--version'], { env: C_LOCALE }).then((r) => r.stdout.trim(), () => 'not found')}`);
  }
  if (needs.cpuSpecific) parts.push(await nativeTarget(compiler));
  const identity = { text: parts.join('\n'), version: version.split('\n')[0]! };
  identityCache.set(key, identity);
  return identity;
}

/**
 * The options the compiler passes its back end for -march=native on this machine (GCC and Clang
 * print them with -###, without compiling anything); where that fails, the CPU's feature flags.
 */
async function nativeTarget(compiler: string): Promise<string> {
  try {
    const dry = await execa(compiler, ['-###', '-march=native', '-x', 'c++', '-E', '/dev/null', '-o', '/dev/null'], { env: C_LOCALE });
    if (dry.stderr.trim() !== '') return dry.stderr.trim();
  } catch {
    // a compiler without -###: fall back below
  }
  try {
    return readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('flags')) ?? '';
  } catch {
    return '';  // not Linux: the compiler version alone keys the cache
  }
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

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** The last -ccbin / --compiler-bindir value in a flag string (either "-ccbin X" or "-ccbin=X"), if any. */
function ccbinFromFlags(flags: string): string | undefined {
  let found: string | undefined;
  for (const m of flags.matchAll(/(?:^|\s)(?:-ccbin|--compiler-bindir)(?:=|\s+)(\S+)/g)) found = m[1];
  return found;
}
