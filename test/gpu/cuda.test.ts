/**
 * GPU only (excluded from CI by vitest.config.ts; `npx vitest run --dir test/gpu` on a machine with
 * an NVIDIA GPU, nvcc and g++). The same checks as `npm run gpu:check` without the benchmark:
 * every kernel against its float64 reference, and the CUDA logits of random-weight tiny models
 * against the CPU backend and the float64 reference, prefill and decode.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { KERNEL_CASES, LOGITS_CASES } from '../../bench/gpu/cases.js';
import { runKernelCheck } from '../../bench/gpu/kernel-check.js';
import { checkLogits } from '../../bench/gpu/logits.js';

const work = mkdtempSync(join(tmpdir(), 'mc-gpu-test-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

async function arch(): Promise<string> {
  const cap = (await execa('nvidia-smi', ['--query-gpu=compute_cap', '--format=csv,noheader'])).stdout.split('\n')[0]!.trim();
  const [major, minor] = cap.split('.');
  return `sm_${major}${minor}${major === '9' ? 'a' : ''}`;
}

describe('each CUDA kernel on its own equals its float64 reference (fresh random inputs, poisoned outputs)', () => {
  it.each(KERNEL_CASES)('for the shapes of $config in $dtype', async (c) => {
    const result = await runKernelCheck(c, { workDir: work, archs: [await arch()] });
    expect(result.lines.filter((l) => l.startsWith('FAIL')), result.lines.join('\n')).toEqual([]);
    expect(result.passed).toBe(true);
  }, 600_000);
});

describe('CUDA logits equal the CPU backend and the float64 reference, prefill and decode', () => {
  it.each(LOGITS_CASES)('for $name (relative L2 within 1e-2 for bf16 and f16, 1e-4 for f32)', async (c) => {
    const r = await checkLogits(c, { workDir: work, cacheDir: join(work, 'cache'), archs: [await arch()], withCpu: true });
    expect(r.pass, JSON.stringify(r)).toBe(true);
  }, 600_000);
});
