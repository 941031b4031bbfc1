/**
 * The CUDA emulator (test/cuda/emu) still sees what it exists to see: small kernels with one bug
 * each (selftest.cu), and bugs seeded into the real kernels' source, must each be reported,
 * while the correct variants pass. Guards the emulator itself: a change that, say, made cp.async
 * copies land at once or wgmma read its operands late would make every other emulated test blind.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModelConfig } from '../../compiler/config/load.js';
import { renderCudaSources } from '../../compiler/emit/render-cuda.js';
import type { SourceFile } from '../../compiler/emit/render.js';
import { packageRoot } from '../../compiler/paths.js';
import { buildPlan } from '../../compiler/plan/build-plan.js';
import { buildEmulated, buildEmulatedKernelChecks, runEmulatedKernelChecks } from './emu/emulate.js';
import { hasNvcc, limiter } from './helpers.js';

const root = packageRoot();
const work = mkdtempSync(join(tmpdir(), 'mc-emu-self-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe.skipIf(!hasNvcc())('the CUDA emulator reports seeded bugs', () => {
  let selftest = '';
  beforeAll(async () => {
    selftest = await buildEmulated([], join(root, 'test', 'cuda', 'emu', 'selftest.cu'), join(work, 'selftest'), []);
  }, 120_000);
  const run = (c: string) => execa(selftest, [c], { reject: false, all: true, env: { MC_EMU_SEED: String(Math.floor(Math.random() * 2 ** 31)) } });

  it('passes the correct kernels', async () => {
    for (const c of ['cp-async-waited', 'warp-full']) expect((await run(c)).exitCode, c).toBe(0);
  });

  it('a read of shared memory whose cp.async group was not waited for gives a wrong result', async () => {
    expect((await run('cp-async-not-waited')).exitCode).toBe(1);
  });

  it('a full-mask shuffle with exited lanes, and half a warp at a barrier while the other half shuffles, are reported', async () => {
    const partial = await run('warp-partial');
    expect(partial.exitCode).toBe(3);
    expect(partial.all).toMatch(/warp_total.*a warp collective \(__shfl_sync\) with exited lanes/);
    const barrier = await run('divergent-barrier');
    expect(barrier.exitCode).toBe(3);
    expect(barrier.all).toMatch(/divergent_barrier.*deadlock: 32 threads at __syncthreads, 32 in warp collectives/);
  });

  it('static shared memory starts as junk in every block, not as the previous block\'s values', async () => {
    expect((await run('static-smem-junk')).exitCode).toBe(0);
  });

  it('a block that reads what another block of the same launch writes sees it only sometimes (blocks run in a random order)', async () => {
    expect((await run('read-other-block')).exitCode).toBe(1);
  });

  it('a cooperative launch holds every block at a grid barrier until all arrive; a grid barrier elsewhere, a block that skips it, a grid too large are reported', async () => {
    expect((await run('grid-barrier')).exitCode).toBe(0);
    const plain = await run('grid-barrier-not-cooperative');
    expect(plain.exitCode).toBe(3);
    expect(plain.all).toContain('a grid barrier in a kernel not launched cooperatively');
    const early = await run('grid-barrier-early-exit');
    expect(early.exitCode).toBe(3);
    expect(early.all).toContain('a block exited while other blocks wait at a grid barrier');
    expect((await run('grid-too-large')).exitCode).toBe(4);
  });

  it('a cluster launch holds a cluster\'s blocks at a cluster barrier and lets them read each other\'s shared memory; a read of a block that has exited (with or without the barrier before exit), 16 blocks without the opt-in are reported', async () => {
    const ok = await run('cluster');
    expect(ok.exitCode, String(ok.all)).toBe(0);
    expect((await run('cluster-16-portable')).exitCode).toBe(4);
    const late = await run('cluster-no-final-sync');
    expect(late.exitCode).toBe(3);
    expect(late.all).toMatch(/a distributed shared-memory access to block \d of the cluster after it exited/);
    // A block that exits before the barrier counts as arrived (barrier.cluster waits for the threads
    // that have not exited), so the others go on; the one that reads it is reported.
    const early = await run('cluster-early-exit');
    expect(early.exitCode).toBe(3);
    expect(early.all).toMatch(/a distributed shared-memory access to block 0 of the cluster after it exited/);
  });

  it('a read past an allocation faults, and 64 KB of dynamic shared memory without cudaFuncSetAttribute is refused', async () => {
    const past = await run('read-past-end');
    expect(past.signal).toBe('SIGSEGV');
    const smem = await run('smem-over-48k');
    expect(smem.exitCode).toBe(4);
    expect(smem.all).toContain("65536 bytes of dynamic shared memory, over the kernel's limit of 49152");
  });

  // The real kernels with seeded bugs, on a config whose GEMMs wrap their shared-memory stages. One
  // build holds them all, each written beside the code it breaks as `if (FAULT)` (::mc_emu::fault(n):
  // MC_EMU_FAULT=n switches bug n on), and each run checks only the group the bug is in (MC_CHECKS):
  // nine builds of the whole checker took most of this file's time. The same build with every bug
  // off must pass, so that each failure below is its bug's.
  interface Fault { file: string; from: string; to: string }
  const FAULTS: Record<string, Fault> = {
    'wgmma-wait': { file: 'mc_gemm_wgmma.cuh', from: 'wgmma::wait_group<1>();', to: 'if (FAULT) wgmma::wait_group<2>(); else wgmma::wait_group<1>();' },
    'mma-barrier': {
      file: 'mc_gemm.cuh',
      from: '    __syncthreads();  // stage kt is visible to all; every warp is done with stage kt - 1, whose buffer is refilled next',
      to: '    if (!FAULT) __syncthreads();  // stage kt is visible to all; every warp is done with stage kt - 1, whose buffer is refilled next',
    },
    'attention-barrier': {
      file: 'mc_attention.cuh',
      from: "    __syncthreads();              // ... everyone's; and every warp is done with tile t - 1's stage (and qs is written)\n",
      to: "    if (!FAULT) __syncthreads();  // ... everyone's; and every warp is done with tile t - 1's stage (and qs is written)\n",
    },
    'prefetch-share': {
      file: 'mc_gemv.cuh',
      from: 'if (first < bytes) prefetch_l2_warp(p + first, uint32_t(bytes - first < share ? bytes - first : share), lane);',
      to: 'if (FAULT) { if (first + share <= bytes) prefetch_l2_warp(p + first, uint32_t(share), lane); } else if (first < bytes) prefetch_l2_warp(p + first, uint32_t(bytes - first < share ? bytes - first : share), lane);',
    },
    // Locals start as a pattern in emulated builds (-ftrivial-auto-var-init=pattern), as registers hold garbage.
    'uninitialized-acc': { file: 'mc_gemv.cuh', from: '  float acc[Op::ROWS] = {};', to: '  float acc[Op::ROWS];\n  if (!FAULT) for (float& a : acc) a = 0.f;' },
    'chain-barrier': {
      file: 'mc_gemv.cuh',
      from: "    grid_barrier(arrivals);  // what this link wrote (the residual, the hidden state, the attention's partials) is read by the next one\n",
      to: "    if (!FAULT) grid_barrier(arrivals);  // what this link wrote (the residual, the hidden state, the attention's partials) is read by the next one\n",
    },
    // The row loaders' (copy_row, rmsnorm_row) float4 loads, 8 bytes off.
    misaligned: {
      file: 'mc_cuda_base.cuh',
      from: 'v[j] = load4(row + (i0 + j * step < K ? i0 + j * step : K - 4));',
      to: 'v[j] = load4(row + (i0 + j * step < K ? i0 + j * step : K - 4) + (FAULT ? 2 : 0));',
    },
    // Programmatic dependent launch: before griddepcontrol.wait a kernel may run beside the previous
    // one (kernels.cu writes each check's inputs in a kernel launched just before the checked one).
    // These two go in at the same place, in this order.
    'pdl-early-read': {
      file: 'mc_gemv.cuh',
      from: '  wait_for_previous_kernel();\n  // MC_CUDA_PDL_TRIGGER=last-rows',
      to: '  if (FAULT) op.load_x(item, xs);  // x copied before the wait (copied again after it)\n  wait_for_previous_kernel();\n  // MC_CUDA_PDL_TRIGGER=last-rows',
    },
    'pdl-trigger-first': {
      file: 'mc_gemv.cuh',
      from: '  wait_for_previous_kernel();\n  // MC_CUDA_PDL_TRIGGER=last-rows',
      to: '  if (FAULT && early_trigger) let_next_kernel_launch();\n  wait_for_previous_kernel();\n  // MC_CUDA_PDL_TRIGGER=last-rows',
    },
  };
  const faultNumber = (name: string) => Object.keys(FAULTS).indexOf(name) + 1;
  const seeded = (): SourceFile[] => {
    const dir = join(root, 'test', 'fixtures', 'emu-medium-dense');
    const plan = buildPlan(loadModelConfig(dir, { name: 'emu-medium-dense' }), { target: 'cuda', dtype: 'bf16', tp: 1, maxTokens: 64 });
    let files = renderCudaSources(plan).files;
    for (const [name, f] of Object.entries(FAULTS)) {
      files = files.map((file) => {
        if (file.path !== f.file) return file;
        expect(file.content, `${f.file} holds the code that ${name} breaks`).toContain(f.from);
        return { path: file.path, content: file.content.replace(f.from, f.to.replaceAll('FAULT', `::mc_emu::fault(${faultNumber(name)})`)) };
      });
    }
    return files;
  };
  // The build and the runs two at a time (CI has 2 cores; each is one thread).
  const slot = limiter(2);
  let binary: Promise<string> | undefined;
  const kernelChecks = (fault: string | undefined, checks: string, engine: string, env?: Record<string, string>) => {
    binary ??= slot(() => buildEmulatedKernelChecks(seeded(), 'bf16', join(work, 'seeded')));
    return binary.then((b) => slot(async () => await runEmulatedKernelChecks(b, {
      seed: '7', tokens: [37, 150], engine, threads: 1,  // one fixed schedule: the bugs must show on it
      env: { ...env, MC_CHECKS: checks, ...(fault === undefined ? {} : { MC_EMU_FAULT: String(faultNumber(fault)) }) },
    })));
  };

  it.concurrent('with every seeded bug off, the same build passes its checks', async () => {
    // Every group on mma.sync, and the prefill GEMMs again on wgmma (where wgmma-wait is).
    for (const [checks, engine] of [['decode,prefill,attention,chain', 'mma'], ['prefill', 'wgmma-all']] as const) {
      const r = await kernelChecks(undefined, checks, engine);
      expect(r.exitCode, `${checks} on ${engine}:\n${String(r.all)}`).toBe(0);
      expect(r.all).toMatch(/^\d+ checks, 0 failed$/m);
    }
  }, 300_000);

  it.concurrent('a wgmma stage refilled while its group is still in flight (wait_group<2>) is reported', async () => {
    const r = await kernelChecks('wgmma-wait', 'prefill', 'wgmma-all');
    expect(r.exitCode).toBe(3);
    expect(r.all).toContain('the shared memory of a wgmma operand changed between wgmma.mma_async and the wait_group that retired it');
  }, 300_000);

  it.concurrent('the mma.sync GEMM without the barrier that publishes a stage fails its checks', async () => {
    const r = await kernelChecks('mma-barrier', 'prefill', 'mma');
    expect(r.exitCode).toBe(1);
    expect(r.all).toMatch(/^FAIL +\S+ +T=(37|150) /m);
  }, 300_000);

  it.concurrent('the decode attention without the barrier before it refills a stage of its cp.async ring fails its checks', async () => {
    const r = await kernelChecks('attention-barrier', 'attention', 'mma');
    expect(r.exitCode).toBe(1);
    expect(r.all).toMatch(/^FAIL +attention_gqa_window +T=1 /m);
  }, 300_000);

  it.concurrent('a decode GEMV that drops the last, shorter share of its L2 prefetch fails its prefetch checks', async () => {
    const r = await kernelChecks('prefetch-share', 'decode', 'mma');
    expect(r.exitCode).toBe(1);
    expect(r.all).toMatch(/^FAIL +\S+ +T=1 +L2 prefetch /m);
    expect(r.all).not.toMatch(/^FAIL .* rel L2 /m);  // a hint: every output is still right
  }, 300_000);

  it.concurrent('a decode GEMV whose accumulators start uninitialized fails its checks (locals start as a pattern, not zero)', async () => {
    const r = await kernelChecks('uninitialized-acc', 'decode', 'mma');
    expect(r.exitCode).toBe(1);
    expect(r.all).toMatch(/^FAIL +wo_residual +T=1 /m);
  }, 300_000);

  it.concurrent('a decode chain without the grid barrier between two links fails its checks (MC_CUDA_DECODE=chain and layer)', async () => {
    const r = await kernelChecks('chain-barrier', 'chain', 'mma');
    expect(r.exitCode).toBe(1);
    expect(r.all).toMatch(/^FAIL +gemv_chain \(wo\.\.next wqkv\) +T=1 +residual +differs/m);
    expect(r.all).toMatch(/^FAIL +gemv_chain \(attention\.\.next wqkv\) +T=1 +attention w0\/8192@\d+ +differs/m);  // the combine read partials not yet written
  }, 300_000);

  it.concurrent('a GEMV input row read as float4 from an address 8 bytes off fails (a GPU faults on it; x86 would not)', async () => {
    const r = await kernelChecks('misaligned', 'decode', 'mma');
    expect(r.exitCode).not.toBe(0);
    expect(r.all).toMatch(/misaligned address 0x[0-9a-f]+ for type 'const struct float4', which requires 16 byte alignment/);
  }, 300_000);

  it.concurrent('a decode GEMV that reads its input rows before griddepcontrol.wait fails the PDL check', async () => {
    const r = await kernelChecks('pdl-early-read', 'decode', 'mma');
    expect(r.exitCode).toBe(3);
    expect(r.all).toMatch(/gemv_kernel.*: reads a device allocation \(\d+ bytes at \S+\) that the previous kernel \(stage_kernel\) wrote, before griddepcontrol\.wait/);
  }, 300_000);

  it.concurrent('a decode GEMV that lets the next kernel launch before its own wait (MC_CUDA_PDL_TRIGGER=last-rows) is reported', async () => {
    const r = await kernelChecks('pdl-trigger-first', 'decode', 'mma', { MC_CUDA_PDL_TRIGGER: 'last-rows' });
    expect(r.exitCode).toBe(3);
    expect(r.all).toContain('griddepcontrol.launch_dependents before griddepcontrol.wait in a kernel launched with programmatic dependent launch');
  }, 300_000);
});
