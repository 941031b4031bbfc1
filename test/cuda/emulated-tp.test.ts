/**
 * Tensor parallelism on the CUDA backend without GPUs: a library built for --tp 2, emulated
 * (test/cuda/emu; its NCCL is a rendezvous of the ranks' threads), run as the runtime runs
 * in-process ranks (one ModelInstance per rank on its own emulated device, a TpGroup that runs
 * their forwards at once). Checks what only TP > 1 exercises: the ranks' column and row slices
 * (column slices copied with cudaMemcpy2D), the vocabulary split of the embedding and the output,
 * the residual zeroed on ranks other than 0 before each all-reduce, and all-reduces inside the
 * captured decode graph. Logits of prefill chunks and graph-replayed decode steps against the
 * float64 reference.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadModelConfig } from '../../compiler/config/load.js';
import { renderCudaSources } from '../../compiler/emit/render-cuda.js';
import { packageRoot } from '../../compiler/paths.js';
import { buildPlan } from '../../compiler/plan/build-plan.js';
import type { Dtype } from '../../compiler/plan/types.js';
import { writeRandomWeights } from '../../compiler/weights/random.js';
import { readSafetensorsHeader, readTensorF32 } from '../../compiler/weights/safetensors.js';
import { rankWeightViews } from '../../runtime/checkpoint.js';
import { singleFileCheckpoint } from '../../runtime/checkpoint-files.js';
import { loadNativeAddon } from '../../runtime/native-loader.js';
import type { NativeModelInstance } from '../../runtime/native.js';
import { referenceLogits } from '../reference/forward.js';
import { relativeL2 } from '../reference/metrics.js';
import { lookup, mulberry32, randomTokens } from '../reference/random.js';
import { buildEmulatedLibrary } from './emu/emulate.js';
import { hasNvcc } from './helpers.js';

const work = mkdtempSync(join(tmpdir(), 'mc-emu-tp-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

// Fresh weights for the dense model; MoE in f32 (no bf16 routing near-ties, see emulated-logits.test.ts).
// The dense case prefills 70 tokens in one call (more rows than one 64-row GEMM tile), the MoE case 20 in chunks of 8.
const CASES: { config: string; dtype: Dtype; tolerance: number; prompt: number; chunk: number }[] = [
  { config: 'tiny-dense', dtype: 'bf16', tolerance: 1e-2, prompt: 70, chunk: 70 },
  { config: 'tiny-moe', dtype: 'f32', tolerance: 1e-4, prompt: 20, chunk: 8 },
];
const DECODE = 6;

describe.skipIf(!hasNvcc())('tensor-parallel CUDA ranks on the emulator (no GPU)', () => {
  for (const c of CASES) {
    it(`${c.config} ${c.dtype} at --tp 2: prefill and graph-replayed decode logits match float64`, async () => {
      const seed = (Date.now() ^ (Math.random() * 0x7fffffff)) >>> 0;
      const config = loadModelConfig(join(packageRoot(), 'configs', 'models', c.config), { name: `emu-tp2-${c.config}`, maxSeqLen: 256 });
      const dir = join(work, `${c.config}-${c.dtype}`);
      const { safetensorsPath } = await writeRandomWeights(config, join(dir, 'model'), { seed, dtype: c.dtype });
      const plan = buildPlan(config, { target: 'cuda', dtype: c.dtype, tp: 2, maxTokens: c.chunk });
      const library = await buildEmulatedLibrary(renderCudaSources(plan).files, join(dir, 'lib'));
      const checkpoint = singleFileCheckpoint(await readSafetensorsHeader(safetensorsPath));
      const tokens = randomTokens(mulberry32(seed), c.prompt + DECODE, config.vocab_size);

      const addon = loadNativeAddon();
      const file = new addon.MappedFile(safetensorsPath);
      const compiled = new addon.CompiledLibrary(library);
      const instances: NativeModelInstance[] = [];
      const rows: Float32Array[] = [];
      try {
        for (let rank = 0; rank < 2; rank++) {
          compiled.checkDevice(rank, rank);
          instances.push(new addon.ModelInstance(compiled, file, rankWeightViews(checkpoint, plan, rank), rank));
        }
        const group = new addon.TpGroup(instances, config.vocab_size, 0);
        try {
          for (let begin = 0; begin < c.prompt; begin += c.chunk) {
            const part = Int32Array.from(tokens.slice(begin, Math.min(c.prompt, begin + c.chunk)));
            const out = await group.forward(part, begin, true);
            for (let t = 0; t < part.length; t++) rows.push(out.slice(t * config.vocab_size, (t + 1) * config.vocab_size));
          }
          for (let p = c.prompt; p < tokens.length; p++) rows.push((await group.forward(Int32Array.of(tokens[p]!), p, false)).slice());
        } finally {
          group.close();
        }
      } finally {
        for (const instance of instances) instance.close();
        file.close();
      }

      const weights = new Map<string, Float32Array>();
      for (const [name, info] of checkpoint.files[0]!.tensors) weights.set(name, await readTensorF32(safetensorsPath, info));
      const reference = referenceLogits(config, lookup(weights), tokens);
      const errors = rows.map((r, p) => relativeL2(r, reference[p]!));
      const context = `${c.config} ${c.dtype} seed ${seed}: ${errors.map((e) => e.toExponential(1)).join(' ')}`;
      expect(rows).toHaveLength(tokens.length);
      expect(errors.every((e) => e <= c.tolerance), context).toBe(true);
    }, 300_000);
  }
});
