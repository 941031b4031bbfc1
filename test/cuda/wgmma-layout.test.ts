/**
 * The sm_90a prefill GEMM (templates/include/mc_gemm_wgmma.cuh) without a GPU: its shared-memory
 * layout and register mapping replayed on the CPU against the PTX ISA's rules (wgmma_layout.cu),
 * and its instructions present in the sm_90a build of a real config, absent from the sm_80 one.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeSources } from '../../compiler/build/cache.js';
import { loadModelConfig } from '../../compiler/config/load.js';
import { renderCudaSources } from '../../compiler/emit/render-cuda.js';
import { packageRoot } from '../../compiler/paths.js';
import { buildPlan } from '../../compiler/plan/build-plan.js';
import { hasNvcc } from './helpers.js';

const nvcc = process.env.NVCC ?? 'nvcc';
const root = packageRoot();
const work = mkdtempSync(join(tmpdir(), 'mc-wgmma-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe.skipIf(!hasNvcc())('the wgmma prefill GEMM', () => {
  it('stores A and B where its descriptors read them, and maps accumulators to the right outputs (CPU replay, plain and PAIRED)', () => {
    const exe = join(work, 'wgmma_layout');
    execFileSync(nvcc, ['-std=c++17', '-O2', '--expt-relaxed-constexpr', '-gencode=arch=compute_80,code=sm_80',
      '-I', join(root, 'templates', 'include'), '-I', join(root, 'runtime', 'abi'), join(root, 'test', 'cuda', 'wgmma_layout.cu'), '-o', exe], { stdio: 'pipe' });
    const out = execFileSync(exe, { encoding: 'utf8' });
    const replays = out.split('\n').filter((l) => l.includes('wgmma layout replay'));
    expect(replays).toHaveLength(4);
    expect(replays.every((l) => l.startsWith('ok '))).toBe(true);
    expect(out).toContain('0 failure(s)');
  }, 120_000);

  it('is in the sm_90a code of every prefill GEMM of a dense and a MoE config, and only there', () => {
    for (const config of ['tiny-dense', 'tiny-moe']) {
      const plan = buildPlan(loadModelConfig(join(root, 'configs', 'models', config)), { target: 'cuda', dtype: 'bf16' });
      const dir = join(work, config);
      writeSources(dir, renderCudaSources(plan).files);
      const ptx = (arch: string) => {
        const file = join(dir, `${arch}.ptx`);
        execFileSync(nvcc, ['-std=c++17', '-O3', '--expt-relaxed-constexpr', `-arch=${arch}`, '-ptx', '-I', dir, '-I', join(root, 'runtime', 'abi'), join(dir, 'model.cu'), '-o', file], { stdio: 'pipe' });
        return readFileSync(file, 'utf8');
      };
      const hopper = ptx('compute_90a'), ampere = ptx('compute_80');
      // One wgmma engine per prefill GEMM (each Op), 4 k-steps of 16 in each.
      const engines = (hopper.match(/\.entry\s+\S*gemm_wgmma_kernel/g) ?? []).length;
      const gemms = (hopper.match(/\.entry\s+\S*gemm_kernel\S*GemmTileILi128E/g) ?? []).length;
      expect(engines, config).toBeGreaterThan(0);
      expect(engines, config).toBe(gemms);
      expect((hopper.match(/wgmma\.mma_async\.sync\.aligned\.m64n128k16\.f32\.bf16\.bf16/g) ?? []).length, config).toBe(4 * engines);
      expect(hopper, config).toMatch(/wgmma_builtE = 1;/);
      expect(ampere, config).not.toContain('wgmma.mma_async');
      expect(ampere, config).toMatch(/wgmma_builtE;|wgmma_builtE = 0;/);
    }
  }, 300_000);
});
