/**
 * A whole CUDA library without a GPU: model.cu (the driver, every kernel, the captured decode
 * graph) built with g++ for the emulator in test/cuda/emu, loaded by the runtime like nvcc's build,
 * and checked as the GPU check checks it (bench/gpu/logits.ts): a random-weight checkpoint, its
 * prompt prefilled in chunks of 12 tokens (so a call crosses a sliding window's ring; one case in a
 * chunk of 80, the path of longer prefills), then decode
 * steps through the graph; logits against the float64 reference and the CPU backend (bf16 and f16
 * within 1e-2 relative L2, f32 within 1e-4).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { renderCudaSources } from '../../compiler/emit/render-cuda.js';
import type { Plan } from '../../compiler/plan/types.js';
import type { Dtype } from '../../compiler/plan/types.js';
import { logitsPlan, type LogitsCase } from '../../bench/gpu/cases.js';
import { checkLogits } from '../../bench/gpu/logits.js';
import { buildEmulatedLibrary } from './emu/emulate.js';
import { hasNvcc, limiter, oncePerKey } from './helpers.js';

const work = mkdtempSync(join(tmpdir(), 'mc-emu-logits-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
afterEach(() => {
  delete process.env.MC_CUDA_GEMM;
  delete process.env.MC_EMU_SEED;
  delete process.env.MC_CUDA_PREFETCH_MB;
  delete process.env.MC_CUDA_A16;
  delete process.env.MC_CUDA_PDL;
  delete process.env.MC_CUDA_PDL_TRIGGER;
  delete process.env.MC_CUDA_DECODE;
  delete process.env.MC_CUDA_X;
  delete process.env.MC_CUDA_ATTN_CLUSTER;
});

interface Case { config: string; dtype: Dtype; snapshot?: boolean; engine?: 'wgmma-all' | 'mma'; prompt?: number; chunk?: number; prefetchMb?: string; a16?: string; pdl?: string; trigger?: string; decode?: 'chain' | 'layer'; x?: 'shared'; cluster?: string }
// Dense, windowed (int and per-layer list), MoE top-2 and top-1; each dtype at least once; the wgmma
// engine under the whole model. Fresh weights and tokens each run, MoE too: checkLogits draws the
// tokens again until no routing decision of the float64 reference is near a tie (ROUTING_MARGIN in
// bench/gpu/cases.ts), where 16-bit rounding may route a token to the other expert.
// prefetchMb: decode GEMVs prefetch the next GEMV's weights into L2 (MC_CUDA_PREFETCH_MB), whose
// ranges the emulator checks against the device allocations. a16: MC_CUDA_A16 (0: prefill GEMMs read A
// through the Op, the path the default no longer takes). pdl, trigger: MC_CUDA_PDL and MC_CUDA_PDL_TRIGGER (the
// launches with and without the attribute, griddepcontrol.launch_dependents; the emulator runs kernels one
// after another, so this checks the launch paths, not the overlap). decode: MC_CUDA_DECODE=chain (a dense
// layer's decode GEMVs in one cooperative kernel a layer, whose blocks the emulator holds at once) or
// layer (its decode attention and combine too; per-layer windows: a chain type per window and KV ring).
// x: MC_CUDA_X=shared (wo and w2 copy their input into shared memory, where the default reads it in the stream).
// cluster: MC_CUDA_ATTN_CLUSTER (the decode attention as one kernel of clusters up to that many positions:
// the prompt of 32 and 10 decode steps cross it, so decode replays both graphs; a window of 6 is always under it).
const CASES: Case[] = [
  { config: 'tiny-dense', dtype: 'bf16', prefetchMb: '8', x: 'shared' },
  // One 80-token chunk: more rows than one 64-row tile, A narrowed once into the model's a16 buffer,
  // on mma.sync alone (the default engine takes the GEMMs its launch rule judges faster on wgmma).
  { config: 'tiny-dense', dtype: 'f16', prompt: 80, chunk: 80, pdl: 'off', engine: 'mma' },
  { config: 'tiny-dense-full', dtype: 'f32', cluster: '37' },
  { config: 'tiny-window-list', dtype: 'f16', a16: '0', snapshot: true, cluster: '36' },
  { config: 'tiny-moe', dtype: 'bf16', engine: 'wgmma-all', prefetchMb: '1,8', snapshot: true },
  { config: 'tiny-moe-top1', dtype: 'f16' },
  // The experts' GEMMs over more than one 64-row tile of gathered rows (narrowed once).
  { config: 'tiny-moe', dtype: 'bf16', prompt: 80, chunk: 80, pdl: 'all', trigger: 'last-rows' },
  { config: 'tiny-window-list', dtype: 'bf16', decode: 'layer' },
  { config: 'tiny-dense-full', dtype: 'f32', decode: 'chain' },
];

const logitsCase = (c: Case): LogitsCase => ({
  name: `emu-${c.config}-${c.dtype}${c.engine ? `-${c.engine}` : ''}${c.a16 !== undefined ? `-a16-${c.a16}` : ''}${c.decode ? `-${c.decode}` : ''}-${c.chunk ?? 12}`,
  config: c.config, dtype: c.dtype, prompt: c.prompt ?? 32, chunk: c.chunk ?? 12, decode: 10,
});
// The cases run one after another (each sets the library's switches in this process's environment),
// but their emulated libraries are built ahead, two at a time (CI has 2 cores), while they run.
const build = oncePerKey<string>(limiter(2));
const library = (name: string, plan: Plan) => build(name, () => buildEmulatedLibrary(renderCudaSources(plan).files, join(work, 'lib', name)));

describe.skipIf(!hasNvcc())('a CUDA library on the emulator (no GPU)', () => {
  beforeAll(() => {
    for (const c of CASES) library(logitsCase(c).name, logitsPlan(logitsCase(c)));
  });
  for (const c of CASES) {
    it(`${c.config} ${c.dtype}${c.engine ? `, prefill GEMMs on ${c.engine}` : ''}${c.prefetchMb ? `, L2 prefetch ${c.prefetchMb} MiB` : ''}${c.a16 !== undefined ? `, MC_CUDA_A16=${c.a16}` : ''}${c.pdl ? `, MC_CUDA_PDL=${c.pdl}` : ''}${c.trigger ? `, MC_CUDA_PDL_TRIGGER=${c.trigger}` : ''}${c.decode ? `, MC_CUDA_DECODE=${c.decode}` : ''}${c.x ? `, MC_CUDA_X=${c.x}` : ''}${c.cluster ? `, MC_CUDA_ATTN_CLUSTER=${c.cluster}` : ''}, chunks of ${c.chunk ?? 12}: prefill and graph-replayed decode logits match float64 and the CPU backend`, async () => {
      // Read by the library when it first needs them; each case loads its own library (its own copy of that state).
      if (c.engine !== undefined) process.env.MC_CUDA_GEMM = c.engine;
      if (c.prefetchMb !== undefined) process.env.MC_CUDA_PREFETCH_MB = c.prefetchMb;
      if (c.a16 !== undefined) process.env.MC_CUDA_A16 = c.a16;
      if (c.pdl !== undefined) process.env.MC_CUDA_PDL = c.pdl;
      if (c.trigger !== undefined) process.env.MC_CUDA_PDL_TRIGGER = c.trigger;
      if (c.decode !== undefined) process.env.MC_CUDA_DECODE = c.decode;
      if (c.x !== undefined) process.env.MC_CUDA_X = c.x;
      if (c.cluster !== undefined) process.env.MC_CUDA_ATTN_CLUSTER = c.cluster;
      const emuSeed = String(Math.floor(Math.random() * 2 ** 31));  // the emulator's warp orders and copy timing
      process.env.MC_EMU_SEED = emuSeed;
      const lc = logitsCase(c);
      const result = await checkLogits(lc, {
        workDir: join(work, 'models'), cacheDir: join(work, 'cache'), withCpu: true,
        cudaLibrary: (plan: Plan) => library(lc.name, plan), snapshot: c.snapshot === true,
      });
      const summary = `${JSON.stringify(result)} MC_EMU_SEED=${emuSeed}`;
      expect(result.pass, summary).toBe(true);
      expect(result.prefillVsReference, summary).toBeLessThanOrEqual(result.tolerance);
      expect(result.decodeVsReference, summary).toBeLessThanOrEqual(result.tolerance);
      expect(result.prefillVsCpu, summary).not.toBeNull();
      expect(result.snapshotExact, summary).toBe(c.snapshot === true ? true : null);
    }, 300_000);
  }
});
