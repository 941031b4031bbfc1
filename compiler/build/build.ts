import { copyFileSync, existsSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { makeDirs } from '../make-dirs.js';
import { onTerminatingSignal, terminatingSignalsHandled } from '../on-signal.js';
import { join, relative, resolve } from 'node:path';
import { execa } from 'execa';
import { hashFiles, type RenderedSources } from '../emit/render.js';
import type { Plan } from '../plan/types.js';
import { cacheEntry, commitStaging, defaultCacheRoot, entryIn, isComplete, stagingDir, syncFile, writeSources } from './cache.js';
import { BuildError } from './errors.js';
import { BACKENDS } from './backends.js';
import { missingCompiler, toolchainIdentity } from './toolchain.js';

export interface BuildOptions {
  /** Cache root (default $MISTRAL_COMPILE_CACHE or ~/.cache/mistral-compile). */
  cacheDir?: string;
  /** Also copy the sources and the library here, for inspection or shipping. */
  outDir?: string;
  /** Called with short progress lines ("compiling …"). */
  onProgress?: (event: BuildProgress) => void;
  /** GPU architectures of a cuda build (default sm_90a, sm_80); part of the flags, so of the cache key. */
  archs?: readonly string[];
}

export type BuildProgress =
  | { stage: 'render'; key: string }
  | { stage: 'cached'; key: string; library: string }
  | { stage: 'compile'; key: string; compiler: string; files: number }
  | { stage: 'done'; key: string; library: string; seconds: number };

export interface BuildResult {
  key: string;
  hash: string;
  library: string;
  sourceDir: string;
  cached: boolean;
  sources: RenderedSources;
}

/** Renders the plan's sources and compiles them into a shared library, reusing the cache. */
export async function buildPlanLibrary(plan: Plan, options: BuildOptions = {}): Promise<BuildResult> {
  const backend = BACKENDS[plan.options.target];
  if (backend === undefined) {
    throw new BuildError('--target', undefined, `target ${plan.options.target} is not built by this version`, `use --target ${Object.keys(BACKENDS).join(' or ')}`);
  }
  if (options.cacheDir !== undefined && (typeof options.cacheDir !== 'string' || options.cacheDir.trim() === '')) {
    // resolve('') is the working directory: an empty value built into wherever the command ran.
    throw new BuildError('--cache (cacheDir)', undefined, `is ${typeof options.cacheDir === 'string' ? 'empty' : `${typeof options.cacheDir}, not a path`}`,
      'pass a directory for the build cache, or leave it out for the default');
  }
  const started = performance.now();
  options.onProgress?.({ stage: 'render', key: plan.key });
  // model.ts (ts-morph) only where a person will read it: the cache hash does not include it.
  const sources = backend.render(plan, { typedModule: options.outDir !== undefined });
  const compiler = backend.compiler();
  if (options.archs !== undefined && plan.options.target !== 'cuda') {
    throw new BuildError('--arch', undefined, `applies to --target cuda only (this build is --target ${plan.options.target})`, 'drop --arch, or build with --target cuda');
  }
  const flags = backend.flags(plan, { archs: options.archs });
  const identity = await toolchainIdentity(compiler, backend.toolchain);
  const hash = hashFiles(sources.files, `${compiler}\0${flags.join(' ')}\0${identity.text}`);
  // Absolute: the compiler runs inside the staging directory, where a relative path means another place.
  const entry = cacheEntry(resolve(options.cacheDir ?? defaultCacheRoot()), plan.key, hash);
  let cached = true;
  if (!isComplete(entry, hash)) {
    cached = false;
    await backend.checkCompiler?.(compiler, { archs: options.archs });
    const staging = stagingDir(entry);
    writeSources(staging, sources.files);
    options.onProgress?.({ stage: 'compile', key: plan.key, compiler, files: sources.files.length });
    const { library, manifest } = entryIn(entry, staging);
    // Both paths relative to the staging directory, the compiler's cwd: nvcc hands the output path
    // to sh in double quotes for its link step, where a cache path's `$(...)` or `"` would be run or break it.
    await compile(compiler, [...flags, backend.entry, '-o', relative(staging, library)], staging, backend.entry);
    if (!existsSync(library)) {
      throw new BuildError(compiler, undefined, `exited with success but wrote no library (${relative(staging, library)} in ${staging})`,
        `check that ${compiler} is a C++ compiler that honours -o (run it with --version)`);
    }
    syncFile(library);
    writeFileSync(manifest, JSON.stringify({ key: plan.key, hash, compiler, flags, toolchain: identity.version, library_bytes: statSync(library).size }, null, 2) + '\n');
    syncFile(manifest);
    commitStaging(staging, entry, hash);
  } else {
    options.onProgress?.({ stage: 'cached', key: plan.key, library: entry.library });
  }
  if (options.outDir !== undefined) exportBuild(options.outDir, sources, entry.library);
  options.onProgress?.({ stage: 'done', key: plan.key, library: entry.library, seconds: (performance.now() - started) / 1000 });
  return { key: plan.key, hash, library: entry.library, sourceDir: entry.dir, cached, sources };
}

async function compile(compiler: string, args: string[], cwd: string, entry: string): Promise<void> {
  let result;
  // In the CLI, the compiler runs in a process group of its own, killed whole when this process is
  // ended (a signal, or an exit such as a closed stdout's): killing the driver alone (g++, nvcc)
  // left its cc1plus or cicc compiling for seconds to minutes, in the way of the next build. The
  // staging directory (cwd) goes with it. In a program that imports the package, which owns its
  // signals, the compiler stays in the program's group, where a terminal's Ctrl-C reaches it.
  // The handlers come first: the compiler can start (and a signal arrive) before execa returns, and
  // no listener runs before the synchronous execa call has set `child`.
  let child: ReturnType<typeof execa> | undefined;
  const killGroup = () => {
    try {
      if (child?.pid !== undefined) process.kill(terminatingSignalsHandled() ? -child.pid : child.pid, 'SIGKILL');
    } catch {
      // the group has ended already
    }
  };
  const abandon = () => {
    killGroup();
    rmSync(cwd, { recursive: true, force: true });
  };
  const release = onTerminatingSignal(abandon);
  process.on('exit', abandon);
  try {
    child = execa(compiler, args, { cwd, reject: false, all: true, detached: terminatingSignalsHandled() });
    result = await child;
  } catch (err) {
    throw missingCompiler(compiler, err);
  } finally {
    release();
    process.removeListener('exit', abandon);
  }
  // Killed first: execa reports a killed compiler as failed without an exit code too.
  if (result.isTerminated) {
    throw new BuildError(compiler, undefined, `was killed by ${result.signal ?? 'a signal'} while compiling ${join(cwd, entry)} (out of memory, or stopped from outside)`,
      'build again; if it recurs, free memory or build one model at a time');
  }
  if ((result as { code?: string }).code === 'ENOENT' || result.failed && result.exitCode === undefined) {
    throw missingCompiler(compiler, result);
  }
  if (result.exitCode !== 0) {
    const output = String(result.all ?? '');
    const first = output.split('\n').find((l) => /error/.test(l)) ?? output.split('\n')[0] ?? '';
    const error = new BuildError(join(cwd, entry), undefined, `${compiler} failed (exit ${result.exitCode}): ${first.trim()}`,
      '--verbose prints the whole compiler output; the sources are kept in that directory');
    error.details = output;
    throw error;
  }
}

function exportBuild(outDir: string, sources: RenderedSources, library: string): void {
  try {
    makeDirs(outDir);
    writeSources(outDir, sources.files);
    copyFileSync(library, join(outDir, library.split('/').pop()!));
  } catch (err) {
    throw new BuildError(outDir, undefined, `cannot write the build output (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, 'choose a writable --out directory');
  }
}
