/**
 * A GPU that allows a block less shared memory than the model's kernels need (compute capability
 * 8.6 and 8.9 allow 99 KB, where the sm_80 code also runs) refuses the model in the device check,
 * before anything is allocated, with one line: a MachineError. Before, the load failed later in
 * cudaFuncSetAttribute with "invalid argument". On the emulator (test/cuda/emu), whose device
 * reports MC_EMU_SMEM_KB of opt-in shared memory a block.
 */
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { normalizeParams } from '../../compiler/config/normalize.js';
import { renderCudaSources } from '../../compiler/emit/render-cuda.js';
import { buildPlan } from '../../compiler/plan/build-plan.js';
import { cudaSharedMemoryNeeded } from '../../compiler/plan/cuda-limits.js';
import { MachineError } from '../../runtime/errors.js';
import { withMachineErrors } from '../../runtime/model.js';
import { loadNativeAddon } from '../../runtime/native-loader.js';
import { errorMessage } from '../e2e/helpers.js';
import { buildEmulatedLibrary } from './emu/emulate.js';
import { hasNvcc } from './helpers.js';

const work = mkdtempSync(join(tmpdir(), 'mc-emu-machine-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
afterEach(() => {
  delete process.env.MC_EMU_SMEM_KB;
});

describe.skipIf(!hasNvcc())('the device check and a block\'s shared memory (emulated GPU)', () => {
  // w2's input row in f32 is 28672 × 4 B = 112 KB (113 with block_sum's 128 B): more than 99 KB, less than an A100's 163 KB.
  const model = normalizeParams({ dim: 64, n_layers: 1, head_dim: 16, hidden_dim: 28672, n_heads: 4, n_kv_heads: 2, norm_eps: 1e-5, vocab_size: 512, rope_theta: 1e6 },
    join(work, 'params.json'), { name: 'wide-ffn' });
  const plan = buildPlan(model, { target: 'cuda', dtype: 'bf16', tp: 1, maxTokens: 16 });
  // One build; each setting loads its own copy of the file (a library reads MC_EMU_SMEM_KB once, and
  // dlopen of one path twice would give the same library).
  let built: Promise<string> | undefined;
  const library = async (copy: string) => {
    built ??= buildEmulatedLibrary(renderCudaSources(plan).files, join(work, 'lib'));
    const path = join(work, `${copy}.so`);
    copyFileSync(await built, path);
    return path;
  };

  it('a GPU with 99 KB a block is refused with what the model needs and what the GPU allows', async () => {
    expect(cudaSharedMemoryNeeded(model, plan.rank_shape, 'bf16')).toBe(28672 * 4 + 128);  // and block_sum's static array
    const path = await library('smem-99');
    const addon = loadNativeAddon();
    // Each emulated library reads MC_EMU_SMEM_KB when its device is first used: one library per setting.
    process.env.MC_EMU_SMEM_KB = '99';
    const small = new addon.CompiledLibrary(path);
    const check = () => withMachineErrors('cuda', () => small.checkDevice(0, 0));
    expect(check).toThrow(MachineError);
    expect(await errorMessage(check)).toMatch(
      /^--target cuda: this model's kernels need 113 KB of shared memory in one block, and .* \(compute capability \d+\.\d+\) allows 99 KB; run on a GPU that allows more \(compute capability 8\.0 or 9\.0: A100, H100, H200\), rebuild with a larger --tp, or use --target cpu$/);
  }, 300_000);

  it('the same library on a GPU that allows 227 KB a block passes the check', async () => {
    const path = await library('smem-227');
    const addon = loadNativeAddon();
    const large = new addon.CompiledLibrary(path);
    expect(large.checkDevice(0, 0)).toBe(true);
  }, 300_000);
});
