/**
 * The MC_CUDA_* switches as the library reads them (mc_device.cuh: check_environment refuses a
 * value, init_device_info turns the accepted ones into DeviceInfo): each value of each switch, on
 * the emulator's GPU (sm_90, so PDL exists, with the sm_90a code's wgmma engine; an H100's 50 MiB
 * of L2, which caps the prefetch). The runtime's wording of a refusal: no-device.test.ts.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModelConfig } from '../../compiler/config/load.js';
import { renderCudaSources } from '../../compiler/emit/render-cuda.js';
import { packageRoot } from '../../compiler/paths.js';
import { buildPlan } from '../../compiler/plan/build-plan.js';
import { buildEmulated } from './emu/emulate.js';
import { hasNvcc } from './helpers.js';

const work = mkdtempSync(join(tmpdir(), 'mc-emu-switches-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe.skipIf(!hasNvcc())('MC_CUDA_* switches, read by the library', () => {
  let probe = '';
  beforeAll(async () => {
    const plan = buildPlan(loadModelConfig(join(packageRoot(), 'configs', 'models', 'tiny-dense')), { target: 'cuda', dtype: 'bf16', tp: 1 });
    probe = await buildEmulated(renderCudaSources(plan).files, join(packageRoot(), 'test', 'cuda', 'device_switches.cu'), work, [], '-Og');
  }, 120_000);
  const read = async (env: Record<string, string>) => {
    const r = await execa(probe, [], { reject: false, all: true, env, extendEnv: false });
    return { code: r.exitCode, line: String(r.all ?? '').trim() };
  };
  const defaults = { pdl: '1', between: '0', early: '0', wgmma: '1', wgmma_all: '0', deep: '1', a16: '1', prefetch: '0,0', chain: '0', layer: '0', x: '1', attn512: '1', cluster: '0' };
  const fields = (line: string) => Object.fromEntries(line.split(' ').map((kv) => kv.split('=') as [string, string]));

  it('unset, and set empty, mean the defaults', async () => {
    expect(fields((await read({})).line)).toEqual(defaults);
    expect(fields((await read({ MC_CUDA_PDL: '', MC_CUDA_GEMM: '', MC_CUDA_GEMM_DEEP: '', MC_CUDA_PDL_TRIGGER: '', MC_CUDA_A16: '', MC_CUDA_PREFETCH_MB: '', MC_CUDA_DECODE: '', MC_CUDA_X: '', MC_CUDA_ATTN_BLOCKS: '', MC_CUDA_ATTN_CLUSTER: '' })).line)).toEqual(defaults);
  });

  it('each value of each switch sets what it names, and nothing else', async () => {
    const cases: Array<[Record<string, string>, Partial<typeof defaults>]> = [
      [{ MC_CUDA_PDL: 'gemv' }, {}],
      [{ MC_CUDA_PDL: 'all' }, { between: '1' }],
      [{ MC_CUDA_PDL: 'off' }, { pdl: '0' }],
      [{ MC_CUDA_PDL_TRIGGER: 'exit' }, {}],
      [{ MC_CUDA_PDL_TRIGGER: 'last-rows' }, { early: '1' }],
      [{ MC_CUDA_PDL: 'off', MC_CUDA_PDL_TRIGGER: 'last-rows' }, { pdl: '0' }],  // no PDL, no trigger
      [{ MC_CUDA_GEMM: 'wgmma' }, {}],
      [{ MC_CUDA_GEMM: 'mma' }, { wgmma: '0' }],
      [{ MC_CUDA_GEMM: 'wgmma-all' }, { wgmma_all: '1' }],
      [{ MC_CUDA_GEMM_DEEP: '1' }, {}],
      [{ MC_CUDA_GEMM_DEEP: '0' }, { deep: '0' }],
      [{ MC_CUDA_A16: '0' }, { a16: '0' }],
      [{ MC_CUDA_A16: '64' }, { a16: '64' }],
      [{ MC_CUDA_PREFETCH_MB: '2' }, { prefetch: '2,2' }],
      [{ MC_CUDA_PREFETCH_MB: '1,3' }, { prefetch: '1,3' }],
      [{ MC_CUDA_PREFETCH_MB: '64,8' }, { prefetch: '50,8' }],  // capped at the L2
      [{ MC_CUDA_DECODE: 'kernels' }, {}],
      [{ MC_CUDA_DECODE: 'chain' }, { chain: '1' }],
      [{ MC_CUDA_DECODE: 'layer' }, { chain: '1', layer: '1' }],  // the layer's GEMVs are a chain
      [{ MC_CUDA_X: 'stream' }, {}],
      [{ MC_CUDA_X: 'shared' }, { x: '0' }],
      [{ MC_CUDA_ATTN_BLOCKS: '512' }, {}],
      [{ MC_CUDA_ATTN_BLOCKS: '256' }, { attn512: '0' }],
      [{ MC_CUDA_ATTN_CLUSTER: '0' }, {}],
      [{ MC_CUDA_ATTN_CLUSTER: '1024' }, { cluster: '1024' }],
      [{ MC_CUDA_ATTN_CLUSTER: '1073741824' }, { cluster: '1073741824' }],
    ];
    for (const [env, changed] of cases) {
      const { code, line } = await read(env);
      expect(code, JSON.stringify(env)).toBe(0);
      expect(fields(line), JSON.stringify(env)).toEqual({ ...defaults, ...changed });
    }
  }, 60_000);

  it('a value that is none of a switch\'s refuses the load, listing the accepted ones', async () => {
    const cases: Array<[Record<string, string>, string]> = [
      [{ MC_CUDA_PDL: 'ALL' }, 'MC_CUDA_PDL="ALL" in the environment is not gemv, all or off; unset it, or set gemv (the default)'],
      [{ MC_CUDA_PDL_TRIGGER: 'early' }, 'MC_CUDA_PDL_TRIGGER="early" in the environment is not exit or last-rows; unset it, or set exit (the default)'],
      [{ MC_CUDA_GEMM: 'wgmma ' }, 'MC_CUDA_GEMM="wgmma " in the environment is not wgmma, mma or wgmma-all; unset it, or set one of those'],
      [{ MC_CUDA_GEMM_DEEP: 'yes' }, 'MC_CUDA_GEMM_DEEP="yes" in the environment is not 1 or 0; unset it, or set 0 to keep the 4-stage small tile for grids smaller than the GPU'],
      [{ MC_CUDA_A16: '-1' }, 'MC_CUDA_A16="-1" in the environment is not a row count from 0 to 65536; unset it, or set 0 to read A through the Op, or N to narrow it from N rows'],
      [{ MC_CUDA_PREFETCH_MB: '1,2,3' }, 'MC_CUDA_PREFETCH_MB="1,2,3" in the environment is not N or N,M whole MiB; unset it, or set e.g. 8 or 8,24'],
      [{ MC_CUDA_DECODE: 'persistent' }, 'MC_CUDA_DECODE="persistent" in the environment is not kernels, chain or layer; unset it, or set kernels (the default)'],
      [{ MC_CUDA_X: 'global' }, 'MC_CUDA_X="global" in the environment is not stream or shared; unset it, or set stream (the default)'],
      [{ MC_CUDA_ATTN_BLOCKS: '1024' }, 'MC_CUDA_ATTN_BLOCKS="1024" in the environment is not 512 or 256; unset it, or set 512 (the default)'],
      [{ MC_CUDA_ATTN_CLUSTER: '1073741825' }, 'MC_CUDA_ATTN_CLUSTER="1073741825" in the environment is not a position count from 0 to 1073741824; unset it, or set 0 (off, the default) or e.g. 1024'],
      [{ MC_CUDA_ATTN_CLUSTER: 'on' }, 'MC_CUDA_ATTN_CLUSTER="on" in the environment is not a position count from 0 to 1073741824; unset it, or set 0 (off, the default) or e.g. 1024'],
    ];
    for (const [env, message] of cases) {
      expect(await read(env), JSON.stringify(env)).toEqual({ code: 2, line: `refused: ${message}` });
    }
  }, 60_000);
});
