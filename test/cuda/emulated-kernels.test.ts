/**
 * Every CUDA kernel run without a GPU: test/gpu/kernels.cu (the GPU check's per-kernel checks:
 * float64 references, fresh random inputs, poisoned outputs) built with g++ against a config's
 * rendered CUDA sources and run by the emulator in test/cuda/emu (each CUDA thread a fiber; warp and
 * warpgroup instructions computed from the PTX ISA's layouts). Both prefill GEMM engines (mma.sync,
 * wgmma for every prefill GEMM, and the default that picks between them), the flash prefill attention (16-bit caches, head dims 16 and
 * 128), in bf16, f16 and f32. The "medium" configs (test/fixtures/emu-medium-*) exist for this: K
 * long enough that both GEMM pipelines wrap around their shared-memory stages, vocabularies and
 * widths that leave partial tiles, and query groups of 3 and 6 heads per KV head.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadModelConfig } from '../../compiler/config/load.js';
import type { ModelConfig } from '../../compiler/config/model.js';
import { renderCudaSources } from '../../compiler/emit/render-cuda.js';
import { packageRoot } from '../../compiler/paths.js';
import { buildPlan } from '../../compiler/plan/build-plan.js';
import type { Dtype, Plan } from '../../compiler/plan/types.js';
import { buildEmulatedKernelChecks, runEmulatedKernelChecks } from './emu/emulate.js';
import { hasNvcc, limiter, oncePerKey } from './helpers.js';

const root = packageRoot();
const work = mkdtempSync(join(tmpdir(), 'mc-emu-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

// The medium configs (test/fixtures/emu-medium-*): GEMM K of 384 (dim) and 1024 or 448 (hidden),
// 6 and 16 steps of the wgmma engine's 64, 12 and 32 of mma.sync's 32; vocabularies that leave
// partial tiles; GROUP 6 and 3; head_dim 64 and 128.
function config(name: string): ModelConfig {
  if (name.startsWith('medium-')) return loadModelConfig(join(root, 'test', 'fixtures', `emu-${name}`), { name: `emu-${name}` });
  return loadModelConfig(join(root, 'configs', 'models', name), { maxSeqLen: 1024 });
}

interface Case { config: string; dtype: Dtype; engine: 'mma' | 'wgmma' | 'wgmma-all'; tokens: [number, number]; sms?: number; env?: Record<string, string>; checks?: 'prefill' }
// MC_CUDA_PDL=all with the last-rows trigger (run 14): the attention, its combine and the MoE routing
// also launched with PDL, GEMVs letting the next kernel launch from their last rows; every kernel
// after the staged inputs' kernel then goes through the emulator's PDL check (test/gpu/kernels.cu: Staging).
const PDL_ALL = { MC_CUDA_PDL: 'all', MC_CUDA_PDL_TRIGGER: 'last-rows' };
const CASES: Case[] = [
  // The tiny configs (head dims of 24 and 16, a window of 8, GROUP 2 and 4) with tensor cores: bf16 for
  // the dense one, f16 for the MoE; the other 16-bit type of each is in the medium cases below (both
  // configs in both) and in emulated-logits.test.ts (tiny-dense f16, tiny-moe bf16). In f32 the dense
  // one (head dim 24, the window); the MoE kernels in f32 are checked here at medium-moe's shapes, and
  // tiny-moe's whole f32 library in emulated-tp.test.ts (TP 2, logits against float64).
  ...([['tiny-dense', 'bf16'], ['tiny-dense', 'f32'], ['tiny-moe', 'f16']] as const).map(([c, dtype]) => ({ config: c, dtype, engine: 'mma' as const, tokens: [37, 150] as [number, number] })),
  ...(['medium-dense', 'medium-moe'] as const).flatMap((c) => [
    { config: c, dtype: 'bf16' as const, engine: 'mma' as const, tokens: [37, 150] as [number, number], env: c === 'medium-moe' ? PDL_ALL : undefined },
    // The engine is what differs from the case above (and medium-moe's PDL_ALL, whose default
    // launches its f16 and f32 cases run): its prefill GEMMs alone (MC_CHECKS).
    { config: c, dtype: 'bf16' as const, engine: 'wgmma-all' as const, tokens: [37, 150] as [number, number], checks: 'prefill' as const },
    { config: c, dtype: 'f16' as const, engine: 'wgmma-all' as const, tokens: [21, 140] as [number, number] },
  ]),
  // f32 heads of 128: the decode attention's ring is 2 stages deep there (3 would pass 96 KB).
  { config: 'medium-moe', dtype: 'f32', engine: 'mma', tokens: [37, 150] },
  // On 32 multiprocessors wq|wk|wv over 37 tokens is 16 blocks: fewer than SMs, no split-K, so the
  // 8-stage small tile (mc::GemmDeep), its ring wrapping over 12 K steps.
  { config: 'medium-dense', dtype: 'bf16', engine: 'mma', tokens: [37, 150], sms: 32 },
  // The default engine (MC_CUDA_GEMM=wgmma): its launch rule keeps 21 tokens on mma.sync (under
  // kWgmmaMinRows) and puts the GEMMs of 150 tokens whose grid fills 8 SMs on wgmma.
  { config: 'medium-dense', dtype: 'bf16', engine: 'wgmma', tokens: [21, 150], sms: 8, checks: 'prefill' },  // 8 SMs: the emulator's default
];

// Two at a time (CI has 2 cores; each build and each run is one thread), and one build per config
// and dtype: the cases of one source differ only in the run's switches (engine, SMs).
const slot = limiter(2);
const build = oncePerKey<string>(slot);
function kernelChecks(plan: Plan, c: Case): Promise<string> {
  const key = `${c.config}-${c.dtype}`;
  return build(key, () => buildEmulatedKernelChecks(renderCudaSources(plan).files, c.dtype, join(work, key)));
}

describe.skipIf(!hasNvcc())('CUDA kernels on the emulator (no GPU)', () => {
  for (const c of CASES) {
    it.concurrent(`${c.config} ${c.dtype}, prefill GEMMs on ${c.engine}${c.sms ? `, ${c.sms} SMs` : ''}${c.env ? `, ${Object.entries(c.env).map(([k, v]) => `${k}=${v}`).join(' ')}` : ''}: ${c.checks ? `every ${c.checks} check` : 'every kernel check'} passes`, async () => {
      const plan = buildPlan(config(c.config), { target: 'cuda', dtype: c.dtype, tp: 1, maxTokens: 64 });
      const binary = await kernelChecks(plan, c);
      const seed = String(Math.floor(Math.random() * 2 ** 31));
      const env = c.checks === undefined ? c.env : { ...c.env, MC_CHECKS: c.checks };
      const run = await slot(async () => await runEmulatedKernelChecks(binary, { seed, tokens: c.tokens, engine: c.engine, threads: 1, sms: c.sms, env }));
      const out = String(run.all ?? '');
      const context = `${c.config} ${c.dtype} ${c.engine} (seed ${seed}):\n${out.split('\n').filter((l) => !l.startsWith('ok ')).join('\n')}`;
      expect(run.exitCode, context).toBe(0);
      const engine = { mma: 'mma.sync', wgmma: 'wgmma where chosen, else mma.sync', 'wgmma-all': 'wgmma (every prefill GEMM)' }[c.engine];
      expect(out, context).toContain(`prefill GEMM engine: ${engine}\n`);
      const checks = out.split('\n').filter((l) => /^(ok|FAIL) /.test(l));
      expect(checks.length, context).toBeGreaterThan(c.checks === undefined ? 30 : 10);
      expect(checks.filter((l) => l.startsWith('FAIL')), context).toEqual([]);
    }, 300_000);
  }
});
