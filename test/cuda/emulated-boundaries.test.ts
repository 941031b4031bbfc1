/**
 * The boundary benchmark (bench/gpu/boundaries.cu, `check.ts --only boundaries`): it builds with
 * nvcc for both GPU generations at the 7B's shapes, and on the CUDA emulator at small shapes its
 * variants agree bit for bit and with float64 (the product's GEMV chain and the persistent kernels
 * over several blocks, which pass their grid barriers in turn), a stale input in the persistent kernel fails its checks, and a grid
 * larger than the GPU holds at once is refused with one line.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { boundariesSources, boundariesTable, buildBoundaries, prebuiltBoundaries, runBoundaries } from '../../bench/gpu/boundaries.js';
import { hashFiles } from '../../compiler/emit/render.js';
import { packageRoot } from '../../compiler/paths.js';
import { buildEmulated } from './emu/emulate.js';
import { hasNvcc } from './helpers.js';

const work = mkdtempSync(join(tmpdir(), 'mc-boundaries-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const SOURCE = join(packageRoot(), 'bench', 'gpu', 'boundaries.cu');
const SMALL = ['MC_DIM=64', 'MC_HIDDEN=128', 'MC_QKV=96'];
// 4 blocks of 8 warps for the persistent kernel (w1|w3's 128 row groups: 4 a warp);
// one emulated multiprocessor (8 such blocks: the grid of the kernels and of the chain).
const EMULATED_RUN = ['--blocks', '4', '--layers', '2', '--reps', '1'];
const COPY_GBS = 100;  // the limit's bandwidth (the emulator's own has no meaning)
const ONE_SM = { MC_EMU_SMS: '1' };
const headers = () => boundariesSources().filter((f) => f.path !== 'boundaries.cu');

describe.skipIf(!hasNvcc())('the boundary benchmark', () => {
  let emulated: string;
  beforeAll(async () => {
    emulated = await buildEmulated(headers(), SOURCE, join(work, 'emu'), SMALL, '-Og');  // runs of ~1 s: build time is what counts
  }, 120_000);

  it('builds with nvcc for sm_90a and sm_80 at Mistral-7B\'s shapes; a prebuilt binary is taken only from today\'s sources and GPUs', async () => {
    const binary = await buildBoundaries(join(work, 'nvcc'), ['sm_90a', 'sm_80']);
    expect(existsSync(binary)).toBe(true);
    const manifest = (sources: string) => ({ dir: work, manifest: { archs: ['sm_90a', 'sm_80'], libraries: {}, kernelChecks: {}, boundaries: { sources, binary } } });
    expect(prebuiltBoundaries(manifest(hashFiles(boundariesSources())), ['sm_90a', 'sm_80'])).toBe(binary);
    expect(prebuiltBoundaries(manifest('0'.repeat(64)), ['sm_90a', 'sm_80'])).toBeUndefined();
    expect(prebuiltBoundaries(manifest(hashFiles(boundariesSources())), ['sm_80'])).toBeUndefined();
  }, 180_000);

  it('on the emulator: nine variants, each timed, the chained ones bit-identical wherever they read x from, and every last GEMV within 1e-5 of float64', async () => {
    const r = await runBoundaries(emulated, COPY_GBS, EMULATED_RUN, ONE_SM);
    expect(r.ok).toBe(true);
    expect(r.variants.map((v) => v.name)).toEqual([
      'kernels', 'kernels-nopdl', 'chain', 'persistent', 'persistent-dynamic', 'streaming', 'kernels-x-wo-w2', 'kernels-x-all', 'kernels (again)',
    ]);
    for (const v of r.variants) expect(v.ms > 0 && Number.isFinite(v.boundary_us)).toBe(true);
    expect(r).toMatchObject({ blocks: 4, layers: 2, gemvs: 8 });
    // 2 layers of (96 + 64 + 256 + 64) rows of 64 or 128 bf16 values
    expect(r.weight_bytes).toBe(2 * 2 * (96 * 64 + 64 * 64 + 256 * 64 + 64 * 128));
    const table = boundariesTable(r).join('\n');
    expect(table).toContain('| persistent |');
    expect(table).toContain('bit-identical; each last GEMV, and the first variant\'s last w1|w3, within 1e-5 of float64: yes');
  }, 120_000);

  it('fails its checks when the persistent kernel reads a stale input (a seeded fault); refuses a grid the GPU cannot hold at once, and a run without the copy bandwidth', async () => {
    const faulty = await buildEmulated(headers(), SOURCE, join(work, 'emu-fault'), [...SMALL, 'MC_BOUNDARIES_FAULT=1'], '-Og');
    await expect(runBoundaries(faulty, COPY_GBS, EMULATED_RUN, ONE_SM)).rejects.toThrow(/persistent differs from kernels.*persistent-dynamic differs from kernels/);
    await expect(runBoundaries(emulated, COPY_GBS, ['--blocks', '9', ...EMULATED_RUN.slice(2)], ONE_SM)).rejects.toThrow(/--blocks 9, but only 8 blocks of the persistent kernel fit this GPU at once/);
    const noCopy = await execa(emulated, EMULATED_RUN, { reject: false, all: true, env: ONE_SM });
    expect(noCopy.exitCode).toBe(2);
    expect(noCopy.all).toContain('--copy-gbs G is needed');
  }, 180_000);
});
