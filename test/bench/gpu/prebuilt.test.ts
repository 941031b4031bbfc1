/** The GPU check takes a prebuilt kernel checker only when it was built from today's sources for the same GPUs. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { KernelCase } from '../../../bench/gpu/cases.js';
import { kernelCheckHash, prebuiltKernelCheck } from '../../../bench/gpu/kernel-check.js';
import type { Manifest } from '../../../bench/gpu/libraries.js';

const dir = mkdtempSync(join(tmpdir(), 'mc-prebuilt-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const c: KernelCase = { config: 'tiny-dense', dtype: 'bf16' };
writeFileSync(join(dir, 'kernels-tiny-dense-bf16'), '');
const manifest = (sources: string | undefined, archs = ['sm_90a']): { manifest: Manifest; dir: string } => ({
  dir, manifest: { archs, libraries: {}, kernelChecks: { 'tiny-dense.bf16': 'kernels-tiny-dense-bf16' }, kernelCheckSources: sources === undefined ? undefined : { 'tiny-dense.bf16': sources } },
});

describe('a prebuilt kernel checker', () => {
  it('is used when its sources hash as today\'s and it was built for this GPU', () => {
    expect(prebuiltKernelCheck(c, manifest(kernelCheckHash(c)), ['sm_90a'])).toBe(join(dir, 'kernels-tiny-dense-bf16'));
  });
  it('is rebuilt when the templates or kernels.cu changed since, when the manifest predates the hashes, or for another GPU', () => {
    expect(prebuiltKernelCheck(c, manifest('0'.repeat(64)), ['sm_90a'])).toBeUndefined();
    expect(prebuiltKernelCheck(c, manifest(undefined), ['sm_90a'])).toBeUndefined();
    expect(prebuiltKernelCheck(c, manifest(kernelCheckHash(c)), ['sm_80'])).toBeUndefined();
  });
  it('hashes differently per config and dtype', () => {
    expect(kernelCheckHash(c)).not.toBe(kernelCheckHash({ config: 'tiny-dense', dtype: 'f16' }));
    expect(kernelCheckHash(c)).not.toBe(kernelCheckHash({ config: 'tiny-moe', dtype: 'bf16' }));
  });
});
