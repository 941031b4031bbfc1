/**
 * `npm run cuda:emulate -- [--config NAME|DIR] [--dtype bf16|f16|f32] [--gemm mma|wgmma|wgmma-all]
 *   [--tokens 37,150] [--seed N] [--sms 132]`: the GPU check's per-kernel checks (test/gpu/kernels.cu) for one
 * config, built with g++ and run on the CPU emulator (test/cuda/emu). For a change to a CUDA kernel
 * on a machine without a GPU; real shapes work but are slow (Mistral 7B: ~4 minutes). --sms sets the
 * emulated device's multiprocessors (default 8; 132 makes the launch choices an H100's).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadModelConfig } from '../../../compiler/config/load.js';
import { renderCudaSources } from '../../../compiler/emit/render-cuda.js';
import { packageRoot } from '../../../compiler/paths.js';
import { buildPlan } from '../../../compiler/plan/build-plan.js';
import { buildEmulatedKernelChecks, runEmulatedKernelChecks, WEIGHT_TYPE } from './emulate.js';

const { values } = parseArgs({
  options: {
    config: { type: 'string', default: 'tiny-moe' },
    dtype: { type: 'string', default: 'bf16' },
    gemm: { type: 'string', default: 'wgmma' },  // the product's default: wgmma where the launch judges it faster
    tokens: { type: 'string', default: '37,150' },
    seed: { type: 'string' },
    sms: { type: 'string', default: '8' },
  },
});
const dtype = values.dtype as keyof typeof WEIGHT_TYPE;
if (!(dtype in WEIGHT_TYPE)) throw new Error(`--dtype ${values.dtype}: use bf16, f16 or f32`);
if (!['mma', 'wgmma', 'wgmma-all'].includes(values.gemm)) throw new Error(`--gemm ${values.gemm}: use mma, wgmma or wgmma-all`);
const tokens = values.tokens.split(',').map(Number);
if (tokens.length !== 2 || !tokens.every((t) => Number.isInteger(t) && t > 1 && t <= 4096)) throw new Error(`--tokens ${values.tokens}: two prefill lengths, e.g. 37,150`);
const sms = Number(values.sms);
if (!Number.isInteger(sms) || sms < 1 || sms > 1024) throw new Error(`--sms ${values.sms}: a number of multiprocessors, 1 to 1024`);

const configDir = isAbsolute(values.config) || values.config.includes('/') ? values.config : join(packageRoot(), 'configs', 'models', values.config);
const plan = buildPlan(loadModelConfig(configDir, { maxSeqLen: 1024 }), { target: 'cuda', dtype, tp: 1, maxTokens: 64 });
const work = mkdtempSync(join(tmpdir(), 'mc-emulate-'));
try {
  process.stderr.write(`building the kernel checks of ${values.config} (${dtype}) for the emulator...\n`);
  const binary = await buildEmulatedKernelChecks(renderCudaSources(plan).files, dtype, work);
  const seed = values.seed ?? String(Math.floor(Math.random() * 2 ** 31));
  const run = await runEmulatedKernelChecks(binary, { seed, tokens: [tokens[0]!, tokens[1]!], engine: values.gemm, sms, output: 'inherit' });
  process.exitCode = run.exitCode ?? 1;
} finally {
  rmSync(work, { recursive: true, force: true });
}
