/**
 * A build of the CLI (which handles terminating signals) ended by a signal (Ctrl-C, kill) while its
 * compiler runs: the compiler's whole process group goes with it (the driver's cc1plus or cicc went on compiling for seconds to minutes), no
 * staging directory is left, and the process ends by that signal. Each run is a child process.
 */
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, expect, it } from 'vitest';
import { packageRoot } from '../../compiler/paths.js';

const work = mkdtempSync(join(tmpdir(), 'mc-build-signal-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** A "compiler" whose compile starts a long child (as g++ starts cc1plus) and records its pid. */
function slowCompiler(pidFile: string): string {
  const path = join(work, 'slow-cxx.sh');
  writeFileSync(path, `#!/bin/sh\ncase "$1" in --version|-###) exec g++ "$@";; esac\nsleep 60 &\necho $! > "${pidFile}"\nwait\n`);
  chmodSync(path, 0o755);
  return path;
}

const CHILD = `
import { buildPlanLibrary } from ${JSON.stringify(join(packageRoot(), 'compiler/build/build.ts'))};
import { loadModelConfig } from ${JSON.stringify(join(packageRoot(), 'compiler/config/load.ts'))};
import { buildPlan } from ${JSON.stringify(join(packageRoot(), 'compiler/plan/build-plan.ts'))};
import { handleTerminatingSignals } from ${JSON.stringify(join(packageRoot(), 'compiler/on-signal.ts'))};
handleTerminatingSignals();  // as the CLI does
const plan = buildPlan(loadModelConfig(${JSON.stringify(join(packageRoot(), 'configs/models/tiny-dense'))}), { dtype: 'f32', maxTokens: 16 });
await buildPlanLibrary(plan, { cacheDir: process.argv[2] });
`;

/** Alive: it exists and is not a zombie (a killed process whose parent died stays one until init reaps it). */
const running = (pid: number) => {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;  // gone meanwhile
  }
};

it('in a program that imports the package, a build installs no signal listener (the program owns its signals)', async () => {
  const { onTerminatingSignal } = await import('../../compiler/on-signal.js');
  const before = process.listenerCount('SIGINT');
  const release = onTerminatingSignal(() => {});
  expect(process.listenerCount('SIGINT')).toBe(before);
  release();
});

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  it(`${signal} during the compile kills the compiler's children too and leaves no staging directory`, async () => {
    const pidFile = join(work, `grandchild-${signal}`);
    const cache = join(work, `cache-${signal}`);
    const child = join(work, 'child.mts');
    writeFileSync(child, CHILD);
    // One process (node with tsx's loader): the tsx CLI's wrapper would take the signal itself.
    const run = execa(process.execPath, ['--import', 'tsx', child, cache], { cwd: packageRoot(), reject: false, env: { CXX: slowCompiler(pidFile) } });
    const deadline = Date.now() + 60_000;
    while (!existsSync(pidFile) || readFileSync(pidFile, 'utf8').trim() === '') {
      if (Date.now() > deadline) throw new Error('the compiler never started');
      await new Promise((r) => setTimeout(r, 20));
    }
    const grandchild = Number(readFileSync(pidFile, 'utf8').trim());
    expect(running(grandchild)).toBe(true);
    run.kill(signal);
    const result = await run;
    expect(result.signal, result.stderr).toBe(signal);
    const gone = Date.now() + 5_000;
    while (running(grandchild) && Date.now() < gone) await new Promise((r) => setTimeout(r, 20));
    expect(running(grandchild), 'the compiler\'s child still runs').toBe(false);
    const keyDir = join(cache, 'tiny-dense.cpu.f32.tp1');
    expect(existsSync(keyDir) ? readdirSync(keyDir) : []).toEqual([]);
  }, 120_000);
}
