/**
 * A build whose compiler is killed (SIGKILL: the OOM killer, a CI timeout) in the middle of
 * compiling: the build fails with one line naming the compiler and the signal, leaves no entry
 * that looks finished, and the next build with the same compiler compiles again and succeeds.
 * The build-cache tests cover a compiler that fails, is missing, or an entry without a manifest.
 */
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildPlanLibrary } from '../../compiler/build/build.js';
import { BuildError } from '../../compiler/build/errors.js';
import { isComplete } from '../../compiler/build/cache.js';
import { loadModelConfig } from '../../compiler/config/load.js';
import { packageRoot } from '../../compiler/paths.js';
import { buildPlan } from '../../compiler/plan/build-plan.js';
import { loadNativeAddon } from '../../runtime/native-loader.js';

const plan = buildPlan(loadModelConfig(join(packageRoot(), 'configs', 'models', 'tiny-dense')), { dtype: 'f32', maxTokens: 8 });
let work: string;
const savedCxx = process.env.CXX;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'mc-build-killed-'));
});
afterAll(() => rmSync(work, { recursive: true, force: true }));
afterEach(() => {
  if (savedCxx === undefined) delete process.env.CXX;
  else process.env.CXX = savedCxx;
});

/**
 * A compiler that, while `armed` exists, starts g++, lets it run `ms` milliseconds (long enough
 * to be writing its output), then SIGKILLs it and itself; once disarmed it is plain g++. One path
 * for both, so the second build has the same cache key as the killed one.
 */
function killOnceCompiler(armed: string, ms: number): string {
  const path = join(work, `cxx-killed-${Math.random().toString(36).slice(2)}.sh`);
  writeFileSync(path, [
    '#!/bin/sh',
    'case "$1" in --version|-###) exec g++ "$@";; esac',
    `if [ -e "${armed}" ]; then`,
    `  rm -f "${armed}"`,
    '  g++ "$@" & compiler=$!',
    `  sleep ${ms / 1000}`,
    '  kill -KILL "$compiler"',
    '  kill -KILL $$',
    'fi',
    'exec g++ "$@"',
    '',
  ].join('\n'));
  chmodSync(path, 0o755);
  return path;
}

describe('a build whose compiler is killed', () => {
  for (const ms of [50, 400]) {
    it(`fails in one line naming the signal, trusts nothing it left, and builds on the next try (killed after ${ms} ms)`, async () => {
      const cacheDir = join(work, `cache-${ms}`);
      const armed = join(work, `armed-${ms}`);
      writeFileSync(armed, '');
      process.env.CXX = killOnceCompiler(armed, ms);

      const error = await buildPlanLibrary(plan, { cacheDir }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(BuildError);
      const message = (error as Error).message;
      expect(message).not.toContain('\n');
      expect(message).toContain(process.env.CXX);
      expect(message).toMatch(/SIGKILL/);
      // Only scratch directories remain: no entry with a manifest.
      const entries = readdirSync(join(cacheDir, plan.key));
      expect(entries.every((e) => e.includes('.partial-')), entries.join(', ')).toBe(true);

      const again = await buildPlanLibrary(plan, { cacheDir });
      expect(again.cached).toBe(false);
      expect(existsSync(armed)).toBe(false);
      expect(isComplete({ dir: again.sourceDir, library: again.library, manifest: join(again.sourceDir, 'build.json') }, again.hash)).toBe(true);
      // The library is whole: it loads and reports its specialization.
      const library = new (loadNativeAddon().CompiledLibrary)(again.library);
      expect(library.specialization).toContain(plan.key);
      expect((await buildPlanLibrary(plan, { cacheDir })).cached).toBe(true);
    }, 120_000);
  }
});
