/**
 * makeDirs (compiler/make-dirs.ts): mkdir -p that ends. Node's recursive mkdirSync spun forever
 * where creating a directory in an existing parent fails with ENOENT (under /proc): a --cache or
 * --out there hung the CLI at full CPU.
 */
import { existsSync, mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildPlanLibrary } from '../../compiler/build/build.js';
import { BuildError } from '../../compiler/build/errors.js';
import { loadModelConfig } from '../../compiler/config/load.js';
import { makeDirs } from '../../compiler/make-dirs.js';
import { buildPlan } from '../../compiler/plan/build-plan.js';

const work = mkdtempSync(join(tmpdir(), 'mc-make-dirs-'));

describe('makeDirs', () => {
  it('creates every missing level, and takes a directory that is already there', () => {
    const deep = join(work, 'a', 'b', 'c');
    makeDirs(deep);
    expect(statSync(deep).isDirectory()).toBe(true);
    makeDirs(deep);
    makeDirs(join(work, 'a'));
  });

  it('refuses a path through or onto a file as mkdir does (ENOTDIR, EEXIST)', () => {
    const file = join(work, 'file');
    writeFileSync(file, 'x');
    expect(() => makeDirs(join(file, 'below'))).toThrow(expect.objectContaining({ code: 'ENOTDIR' }));
    expect(() => makeDirs(file)).toThrow(expect.objectContaining({ code: 'EEXIST' }));
  });

  it.skipIf(!existsSync('/proc/self'))('under /proc fails with ENOENT at once instead of spinning', () => {
    const started = performance.now();
    expect(() => makeDirs('/proc/mc-no-such/dir')).toThrow(expect.objectContaining({ code: 'ENOENT' }));
    expect(performance.now() - started).toBeLessThan(5000);
  });

  it.skipIf(!existsSync('/proc/self'))('a build cache under /proc is one line naming it', async () => {
    const plan = buildPlan(loadModelConfig(join(import.meta.dirname, '../../configs/models/tiny-dense')), { dtype: 'f32', maxTokens: 16 });
    const err = await buildPlanLibrary(plan, { cacheDir: '/proc/mc-no-such-cache' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BuildError);
    expect((err as Error).message).toMatch(/^\/proc\/mc-no-such-cache\/tiny-dense\.cpu\.f32\.tp1: cannot create the build directory \(ENOENT\); make it writable, or choose another with --cache DIR/);
  });
});
