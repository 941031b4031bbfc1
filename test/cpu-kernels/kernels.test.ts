/**
 * The CPU kernels of templates/include/mc_cpu.hpp against float64 references (check_kernels.cpp),
 * built with the flags of a compiled model: once for this CPU (AVX-512 where it has it) and once
 * with AVX-512 turned off, so the portable loops stay correct too.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../../compiler/paths.js';

const root = packageRoot();
const dir = mkdtempSync(join(tmpdir(), 'mc-cpu-kernels-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface CaseResult { name: string; error: number; tolerance: number; ok: boolean }

async function buildAndRun(variant: string, extraFlags: string[]): Promise<{ header: string; cases: CaseResult[] }> {
  const exe = join(dir, `check-${variant}`);
  await execa('g++', ['-std=c++20', '-O3', '-march=native', ...extraFlags, '-fopenmp', '-Wall', '-Wextra',
    `-I${join(root, 'runtime', 'abi')}`, `-I${join(root, 'templates', 'include')}`, join(root, 'test', 'cpu-kernels', 'check_kernels.cpp'), '-o', exe]);
  // Exit code 1 means a failed case: the lines say which, so parse them either way.
  const { stdout } = await execa(exe, [], { env: { OMP_NUM_THREADS: '2' }, reject: false });
  const lines = stdout.trim().split('\n');
  const cases = lines.slice(1, -1).map((line) => {
    const [name, error, tolerance, verdict] = line.split(' ');
    return { name: name!, error: Number(error), tolerance: Number(tolerance), ok: verdict === 'ok' };
  });
  expect(lines.at(-1), 'the checker ran to the end').toMatch(/^done, \d+ failed$/);
  return { header: lines[0]!, cases };
}

describe.each([
  { variant: 'native', flags: [] as string[], what: 'this CPU\'s instructions (AVX-512 where present)' },
  { variant: 'portable', flags: ['-mno-avx512f'], what: 'AVX-512 turned off (the portable loops)' },
])('kernels built for $what', ({ variant, flags }) => {
  const run = buildAndRun(variant, flags);
  for (const kernel of ['matmul/', 'matmul_pair/', 'attention/']) {
    it(`${kernel.slice(0, -1)} is within tolerance of float64 and writes every output once, in every case`, async (ctx) => {
      const { header, cases } = await run;
      const mine = cases.filter((c) => c.name.startsWith(kernel));
      expect(mine.length, 'cases run').toBeGreaterThan(10);
      const failed = mine.filter((c) => !c.ok).map((c) => `${c.name}: ${c.error} > ${c.tolerance}`);
      expect(failed, header).toEqual([]);
      ctx.annotate(`${mine.length} cases (${header}), worst relative L2 ${Math.max(...mine.map((c) => c.error)).toExponential(2)}`);
    }, 120_000);
  }
});
