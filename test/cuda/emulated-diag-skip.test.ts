/**
 * MC_CUDA_DIAG_SKIP, the timing diagnostic behind the GPU check's `breakdown` section, on the CUDA
 * emulator: a library leaves exactly the named kernels' launches out of every forward pass (prefill
 * and the captured decode graph), reads the setting when a model is created, and refuses a name
 * that is not one of its kernels with one line; bench/gpu/breakdown.ts times its variants.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { renderCudaSources } from '../../compiler/emit/render-cuda.js';
import { buildPlan } from '../../compiler/plan/build-plan.js';
import type { Plan } from '../../compiler/plan/types.js';
import { EnvironmentError } from '../../runtime/errors.js';
import { withMachineErrors } from '../../runtime/model.js';
import { loadNativeAddon } from '../../runtime/native-loader.js';
import type { NativeModelInstance } from '../../runtime/native.js';
import { benchVariant, breakdownVariants, diagSkipValue } from '../../bench/gpu/breakdown.js';
import { decodeConfig, type DecodeCase } from '../../bench/gpu/cases.js';
import { DECODE_REPEATS, openSynthetic, SYNTHETIC_BYTES, weightBytesPerToken, writeSyntheticWeights } from '../../bench/gpu/decode.js';
import { buildEmulatedLibrary } from './emu/emulate.js';
import { hasNvcc } from './helpers.js';

const work = mkdtempSync(join(tmpdir(), 'mc-emu-skip-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
afterEach(() => {
  delete process.env.MC_CUDA_DIAG_SKIP;
});

describe.skipIf(!hasNvcc())('MC_CUDA_DIAG_SKIP (emulated GPU)', () => {
  const c: DecodeCase = { label: 'tiny-dense', config: 'tiny-dense', prompt: 5, decode: 2 };
  let plan: Plan;
  let library: string;
  const pool = join(work, 'pool.bin');
  beforeAll(async () => {
    plan = buildPlan(decodeConfig(c), { target: 'cuda', dtype: 'bf16', tp: 1, maxTokens: 8 });
    library = await buildEmulatedLibrary(renderCudaSources(plan).files, join(work, 'lib'));
    writeSyntheticWeights(pool);
  }, 300_000);

  /** The benchmark's kind of model, but each weight at a fixed offset of the pool: the same weights at every open. */
  const openFixed = (): NativeModelInstance => openSynthetic(plan, library, pool, (i, bytes) => (i * 1_048_576) % (SYNTHETIC_BYTES - bytes));

  /** Prefill of 5 tokens (all rows), then 2 graph-replayed decode steps: their logits, in order. */
  function run(skip: string | undefined): Float32Array[] {
    if (skip !== undefined) process.env.MC_CUDA_DIAG_SKIP = skip;
    let model: NativeModelInstance | undefined;
    try {
      model = openFixed();
      return [model.forwardSync(Int32Array.of(3, 1, 4, 1, 5), 0, true), model.forwardSync(Int32Array.of(9), 5, false), model.forwardSync(Int32Array.of(2), 6, false)];
    } finally {
      model?.close();
      delete process.env.MC_CUDA_DIAG_SKIP;
    }
  }

  it('"all" launches nothing: the logits stay the zeros the activations start as; one kernel left out changes them; unset is the model', () => {
    const full = run(undefined);
    for (const l of full) expect(l.some((x) => x !== 0) && l.every(Number.isFinite)).toBe(true);
    for (const l of run('all')) expect(l.every((x) => x === 0)).toBe(true);
    // Without the attention the residual stream misses its output: finite, different logits.
    const noAttention = run('attention_gqa_window');
    noAttention.forEach((l, i) => {
      expect(l.every(Number.isFinite)).toBe(true);
      expect(l).not.toEqual(full[i]);
    });
    // Only the output projection: RMSNorm of the zeroed residual is 0, so the logits are 0 too.
    const outputOnly = breakdownVariants(plan).find((v) => v.label === 'only rmsnorm_output')!;
    for (const l of run(diagSkipValue(plan, outputOnly))) expect(l.every((x) => x === 0)).toBe(true);
    // The same library with nothing left out again (the setting is read per model, not per process).
    run(undefined).forEach((l, i) => expect(l).toEqual(full[i]));
  }, 300_000);

  it('a name that is not one of the model\'s kernels, or an empty item, is refused with the list it takes', () => {
    const addon = loadNativeAddon();
    const lib = new addon.CompiledLibrary(library);
    for (const value of ['attention', 'wo_residual,', 'moe_w13_swiglu', 'ALL']) {
      process.env.MC_CUDA_DIAG_SKIP = value;
      let error: unknown = null;
      try {
        withMachineErrors('cuda', () => lib.checkDevice(0, 0));
      } catch (e) {
        error = e;
      }
      expect(error, value).toBeInstanceOf(EnvironmentError);
      expect((error as Error).message).toBe(`environment: MC_CUDA_DIAG_SKIP: "${value}" is not all or a comma-separated list of this model's kernels ` +
        '(embedding_lookup, rmsnorm_qkv_rope_cache, attention_gqa_window, wo_residual, rmsnorm_w13_swiglu, w2_residual, rmsnorm_output); ' +
        'unset it, or set e.g. attention_gqa_window (for timing only: the logits are then wrong)');
    }
    process.env.MC_CUDA_DIAG_SKIP = 'wo_residual,attention_gqa_window';
    expect(lib.checkDevice(0, 0)).toBe(true);
  });

  it('a MoE model with its routing left out streams expert rows still in range (offsets left zero), and its logits stay finite', async () => {
    const moePlan = buildPlan(decodeConfig({ label: 'tiny-moe', config: 'tiny-moe', prompt: 5, decode: 2 }), { target: 'cuda', dtype: 'bf16', tp: 1, maxTokens: 8 });
    const moeLibrary = await buildEmulatedLibrary(renderCudaSources(moePlan).files, join(work, 'lib-moe'));
    for (const skip of ['rmsnorm_moe_gate_topk_softmax', 'rmsnorm_moe_gate_topk_softmax,moe_group_by_expert', 'moe_group_by_expert']) {
      process.env.MC_CUDA_DIAG_SKIP = skip;
      const model = openSynthetic(moePlan, moeLibrary, pool);
      try {
        for (const l of [model.forwardSync(Int32Array.of(3, 1, 4, 1, 5), 0, true), model.forwardSync(Int32Array.of(9), 5, false), model.forwardSync(Int32Array.of(2), 6, false)])
          expect(l.every(Number.isFinite), skip).toBe(true);
      } finally {
        model.close();
        delete process.env.MC_CUDA_DIAG_SKIP;
      }
    }
  }, 300_000);

  it('the breakdown times each variant with the bytes of the kernels that ran', () => {
    const variants = breakdownVariants(plan);
    for (const label of ['every kernel', 'only wo_residual', 'nothing (host round trip, empty graph)']) {
      const v = variants.find((x) => x.label === label)!;
      const value = diagSkipValue(plan, v);
      if (value !== undefined) process.env.MC_CUDA_DIAG_SKIP = value;
      const model = openSynthetic(plan, library, pool);
      try {
        const r = benchVariant(c, plan, model, v);
        expect(r.msPerTokenRuns).toHaveLength(DECODE_REPEATS);
        expect(r.msPerToken).toBeGreaterThan(0);
        expect(r.weightBytesPerToken).toBe(weightBytesPerToken(plan, new Set(v.skip)));
        if (label === 'every kernel') expect(r.kvBytesPerToken).toBeGreaterThan(0);
        if (label === 'only wo_residual') expect(r.kvBytesPerToken).toBe(0);
        if (label.startsWith('nothing')) expect(r.weightBytesPerToken).toBe(0);
      } finally {
        model.close();
        delete process.env.MC_CUDA_DIAG_SKIP;
      }
    }
  }, 300_000);
});
