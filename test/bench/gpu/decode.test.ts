/**
 * The decode and prefill benchmarks' mechanics without a GPU (bench/gpu/decode.ts and prefill.ts,
 * on the CPU backend, which speaks the same ABI): a prompt longer than the plan's maxTokens is
 * prefilled in chunks, the timed steps run, the KV bytes per token are those of the timed
 * positions, and the prefill timing then restarts the sequence; forward() is timed against
 * forwardSync on a restarted sequence. The long-context cases
 * (check.ts `long`) depend on this; a GPU lease should not be the first place it runs.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeConfig, type DecodeCase } from '../../../bench/gpu/cases.js';
import { benchDecode, benchDecodePromise, DECODE_REPEATS, PROMISE_PAIRS, kvBytesPerToken, openSynthetic, writeSyntheticWeights } from '../../../bench/gpu/decode.js';
import { libraryFor } from '../../../bench/gpu/libraries.js';
import { benchPrefill, PREFILL_REPEATS } from '../../../bench/gpu/prefill.js';
import { buildPlan } from '../../../compiler/plan/build-plan.js';

const work = mkdtempSync(join(tmpdir(), 'mc-bench-decode-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('the decode benchmark', () => {
  it('prefills a prompt longer than maxTokens in chunks, times the steps after it, then times prefills', async () => {
    const c: DecodeCase = { label: 'tiny-window-list', config: 'tiny-window-list', prompt: 21, decode: 4 };
    const plan = buildPlan(decodeConfig(c), { target: 'cpu', dtype: 'bf16', tp: 1, maxTokens: 8 });
    const { library } = await libraryFor(plan, { cacheDir: join(work, 'cache') });
    const pool = join(work, 'pool.bin');
    writeSyntheticWeights(pool);
    const model = openSynthetic(plan, library, pool);
    try {
      const r = benchDecode(c, plan, model);
      expect(r.prompt).toBe(21);
      expect(r.msPerTokenRuns).toHaveLength(DECODE_REPEATS);
      expect(r.msPerToken).toBeGreaterThan(0);
      // Timed positions: after the prompt and 8 warm-up steps, the repetitions one after another.
      expect(r.kvBytesPerToken).toBe(kvBytesPerToken(plan, 29, 4 * DECODE_REPEATS));
      expect(r.kvBytesPerToken).toBeGreaterThan(0);
      // The prefill timing on the same model afterwards: each call restarts the sequence at 0.
      const p = benchPrefill(c, plan, model, 8);
      expect(p.msRuns).toHaveLength(PREFILL_REPEATS);
      expect(p.tflops).toBeGreaterThan(0);
      expect(() => benchPrefill(c, plan, model, 9)).toThrow(/needs maxTokens >= 9/);
      // forward() against forwardSync, alternating, on the restarted sequence: its positions fit
      // the config's context (decodeConfig's room for DECODE_REPEATS repetitions).
      expect(2 * PROMISE_PAIRS).toBeLessThanOrEqual(DECODE_REPEATS);
      const q = await benchDecodePromise(c, plan, model);
      expect(q.syncMsPerToken).toBeGreaterThan(0);
      expect(q.promiseMsPerToken).toBeGreaterThan(0);
      expect(q.extraUsPerToken).toBeCloseTo(1000 * (q.promiseMsPerToken - q.syncMsPerToken), 6);
    } finally {
      model.close();
    }
  }, 120_000);
});
