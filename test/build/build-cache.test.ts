import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildPlanLibrary } from '../../compiler/build/build.js';
import { cacheEntry, commitStaging, isComplete } from '../../compiler/build/cache.js';
import { BuildError } from '../../compiler/build/errors.js';
import { loadModelConfig } from '../../compiler/config/load.js';
import { buildPlan } from '../../compiler/plan/build-plan.js';

const plan = buildPlan(loadModelConfig(join(import.meta.dirname, '../../configs/models/tiny-dense')), { dtype: 'f32', maxTokens: 16 });
let work: string;
const savedCxx = process.env.CXX;

/** A compiler wrapper that records each compile (not --version) and hands over to g++. */
function countingCompiler(log: string): string {
  const path = join(work, `cxx-${Math.random().toString(36).slice(2)}.sh`);
  writeFileSync(path, `#!/bin/sh\ncase "$1" in --version|-###) ;; *) echo compile >> "${log}";; esac\nexec g++ "$@"\n`);
  chmodSync(path, 0o755);
  return path;
}

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'mc-build-'));
});
afterEach(() => {
  if (savedCxx === undefined) delete process.env.CXX;
  else process.env.CXX = savedCxx;
});

describe('the build cache', () => {
  it('compiles once, then reuses the library for unchanged sources without running the compiler', async () => {
    const cacheDir = join(work, 'cache-a');
    const log = join(work, 'log-a');
    process.env.CXX = countingCompiler(log);
    const first = await buildPlanLibrary(plan, { cacheDir });
    const second = await buildPlanLibrary(plan, { cacheDir });
    expect(first.cached).toBe(false);
    expect(second.cached).toBe(true);
    expect(second.library).toBe(first.library);
    expect(readFileSync(log, 'utf8').trim().split('\n')).toHaveLength(1);
    expect(existsSync(first.library)).toBe(true);
    expect(first.library).toContain(`lib${plan.key}.${first.hash.slice(0, 16)}.so`);
  });

  it('does not trust an entry an interrupted build left behind', async () => {
    const cacheDir = join(work, 'cache-b');
    const built = await buildPlanLibrary(plan, { cacheDir });
    // Interrupted before the manifest was written: library present, build.json missing.
    rmSync(join(built.sourceDir, 'build.json'));
    const log = join(work, 'log-b');
    process.env.CXX = countingCompiler(log);
    const again = await buildPlanLibrary(plan, { cacheDir });
    expect(again.cached).toBe(false);
    expect(readFileSync(log, 'utf8').trim().split('\n')).toHaveLength(1);
    // A manifest for other sources is not trusted either.
    writeFileSync(join(again.sourceDir, 'build.json'), JSON.stringify({ hash: 'something else' }));
    expect((await buildPlanLibrary(plan, { cacheDir })).cached).toBe(false);
  });

  it('removes what interrupted builds left (their process gone, over an hour old) when it builds the key again', async () => {
    const cacheDir = join(work, 'cache-stale');
    const keyDir = join(cacheDir, plan.key);
    const dead = spawnSync('true').pid!;  // a process that has exited
    const hoursAgo = new Date(Date.now() - 2 * 3600_000);
    const make = (name: string, old: boolean) => {
      mkdirSync(join(keyDir, name, 'kernels'), { recursive: true });
      writeFileSync(join(keyDir, name, 'model.cpp'), '// half written');
      if (old) utimesSync(join(keyDir, name), hoursAgo, hoursAgo);
      return name;
    };
    const stale = make(`0123456789abcdef.partial-${dead}-1`, true);
    const recent = make(`0123456789abcdef.partial-${dead}-2`, false);        // maybe another host's build in progress
    const live = make(`fedcba9876543210.partial-${process.pid}-3`, true);    // a build that still runs
    const foreign = make(`not-a-hash.partial-${dead}-4`, true);              // not a name the cache makes
    const built = await buildPlanLibrary(plan, { cacheDir });
    expect(built.cached).toBe(false);
    const left = readdirSync(keyDir);
    expect(left).not.toContain(stale);
    expect(left).toEqual(expect.arrayContaining([recent, live, foreign]));
    expect(left.filter((n) => n.includes('.partial-') && n.includes(`-${process.pid}-`) && n !== live)).toEqual([]);  // its own staging was renamed into place
  });

  it('rebuilds an entry whose library was cut short (dlopen of it crashed with a bus error)', async () => {
    const cacheDir = join(work, 'cache-cut');
    const first = await buildPlanLibrary(plan, { cacheDir });
    truncateSync(first.library, 1000);
    const again = await buildPlanLibrary(plan, { cacheDir });
    expect(again.cached).toBe(false);
    expect(readFileSync(again.library).length).toBeGreaterThan(1000);
    expect((await buildPlanLibrary(plan, { cacheDir })).cached).toBe(true);
  });

  it('a build that finishes second keeps the entry of the one that finished first; an interrupted entry is replaced', () => {
    const root = join(work, 'cache-race');
    const entry = cacheEntry(root, 'm.cpu.f32.tp1', 'ab'.repeat(32));
    const stage = (name: string, complete: boolean, mark: string) => {
      const dir = join(root, 'm.cpu.f32.tp1', name);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, entry.library.split('/').pop()!), mark);
      if (complete) writeFileSync(join(dir, 'build.json'), JSON.stringify({ hash: 'ab'.repeat(32), library_bytes: mark.length }));
      return dir;
    };
    // Nothing there: renamed in.
    commitStaging(stage('s1', true, 'first'), entry, 'ab'.repeat(32));
    expect(readFileSync(entry.library, 'utf8')).toBe('first');
    // A finished entry there (another process won): ours is dropped, theirs untouched.
    const second = stage('s2', true, 'second');
    commitStaging(second, entry, 'ab'.repeat(32));
    expect(readFileSync(entry.library, 'utf8')).toBe('first');
    expect(existsSync(second)).toBe(false);
    // An interrupted entry there (no manifest): replaced by ours.
    rmSync(entry.manifest);
    commitStaging(stage('s3', true, 'third'), entry, 'ab'.repeat(32));
    expect(readFileSync(entry.library, 'utf8')).toBe('third');
    expect(isComplete(entry, 'ab'.repeat(32))).toBe(true);
    expect(readdirSync(join(root, 'm.cpu.f32.tp1')).sort()).toEqual([entry.dir.split('/').pop()]);
  });

  it('leaves no finished-looking entry when the compiler fails', async () => {
    const cacheDir = join(work, 'cache-c');
    const failing = join(work, 'failing-cxx.sh');
    writeFileSync(failing, '#!/bin/sh\n[ "$1" = "--version" ] && { echo "fake 1.0"; exit 0; }\necho "model.cpp:12:3: error: expected \';\' before \'}\' token" >&2\nexit 1\n');
    chmodSync(failing, 0o755);
    process.env.CXX = failing;
    const error = await buildPlanLibrary(plan, { cacheDir }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BuildError);
    expect((error as Error).message).toMatch(/model\.cpp: .*failed \(exit 1\): model\.cpp:12:3: error: expected ';' before '}' token/);
    expect((error as BuildError).details).toContain('error: expected');
    const entries = readdirSync(join(cacheDir, plan.key));
    expect(entries.every((e) => e.includes('.partial-'))).toBe(true);
  });

  it('names a compiler that exits with success but writes no library', async () => {
    process.env.CXX = '/bin/true';
    await expect(buildPlanLibrary(plan, { cacheDir: join(work, 'cache-true') })).rejects.toThrow(/^\/bin\/true: exited with success but wrote no library \(lib\S+\.so in \S+\); check that \/bin\/true is a C\+\+ compiler that honours -o/);
  });

  it('refuses an empty or non-string cache directory (resolve(\'\') is the working directory)', async () => {
    for (const cacheDir of ['', '  ', 7 as unknown as string]) {
      await expect(buildPlanLibrary(plan, { cacheDir })).rejects.toThrow(/^--cache \(cacheDir\): is (empty|number, not a path); pass a directory for the build cache/);
    }
  });

  it('names a compiler that is not installed and says how to fix it', async () => {
    process.env.CXX = '/nonexistent/bin/g++';
    await expect(buildPlanLibrary(plan, { cacheDir: join(work, 'cache-d') })).rejects.toThrow(/^\$CXX=\/nonexistent\/bin\/g\+\+: no such file; point \$CXX at a C\+\+20 compiler, or unset it to use g\+\+ on PATH$/);
  });

  it('explains an output or cache directory it cannot write', async () => {
    const file = join(work, 'a-file');
    writeFileSync(file, 'not a directory');
    await expect(buildPlanLibrary(plan, { cacheDir: join(file, 'cache') })).rejects.toThrow(/cannot create the build directory \(ENOTDIR\); make it writable, or choose another/);
    await expect(buildPlanLibrary(plan, { cacheDir: join(work, 'cache-e'), outDir: join(file, 'out') })).rejects.toThrow(/a-file\/out: cannot write the build output \(ENOTDIR\)/);
  });

  it('writes the sources and the library to --out for inspection', async () => {
    const outDir = join(work, 'out');
    const built = await buildPlanLibrary(plan, { cacheDir: join(work, 'cache-a'), outDir });
    expect(readdirSync(outDir).sort()).toEqual(['kernels', 'mc_abi.h', 'mc_cpu.hpp', 'mc_entry.hpp', 'model.cpp', 'model.ts', built.library.split('/').pop()!].sort());
  });
});
