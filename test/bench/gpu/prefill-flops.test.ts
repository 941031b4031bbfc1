/**
 * The FLOP count behind the prefill benchmark's "fraction of the matrix limit" (bench/gpu/prefill.ts),
 * checked against counts by hand from the published shapes.
 */
import { describe, expect, it } from 'vitest';
import { decodePlan, DECODE_CASES, PREFILL_TOKENS } from '../../../bench/gpu/cases.js';
import { weightBytesPerToken, weightBytesRead } from '../../../bench/gpu/decode.js';
import { prefillFlops, visiblePairs } from '../../../bench/gpu/prefill.js';

const mistral = decodePlan(DECODE_CASES.find((c) => c.config === 'mistral-7b-v0.1')!);
const mixtral = decodePlan(DECODE_CASES.find((c) => c.config === 'mixtral-8x7b')!);

describe('prefill FLOPs', () => {
  it('count every pair of a causal mask when the window is longer than the prompt', () => {
    expect(visiblePairs(512, null)).toBe((512 * 513) / 2);
    expect(visiblePairs(512, 4096)).toBe((512 * 513) / 2);
  });

  it('bound each query to its window when the window is shorter than the prompt', () => {
    // queries 0..3 see 1..4 keys, the other 6 see 4 each
    expect(visiblePairs(10, 4)).toBe(1 + 2 + 3 + 4 + 6 * 4);
  });

  it('of Mistral-7B at 512 tokens: 2 × P × linear weights, the output row once, and causal attention', () => {
    const perLayer = 2 * 4096 * 4096 + 2 * 1024 * 4096 + 3 * 14336 * 4096;  // wq, wo; wk, wv; w1, w2, w3
    const f = prefillFlops(mistral, 512);
    expect(f.linear).toBe(2 * 512 * 32 * perLayer);
    expect(f.output).toBe(2 * 32000 * 4096);
    expect(f.attention).toBe(2 * 2 * 32 * 128 * ((512 * 513) / 2) * 32);
    expect(f.total).toBe(f.linear + f.output + f.attention);
    expect(f.total / 1e12).toBeCloseTo(7.22, 2);
  });

  it('of Mixtral count 2 of the 8 experts per token and the gate', () => {
    const attention = 2 * 4096 * 4096 + 2 * 1024 * 4096;
    const experts = (8 * 3 * 14336 * 4096 * 2) / 8;
    const gate = 8 * 4096;
    expect(prefillFlops(mixtral, 128).linear).toBe(2 * 128 * mixtral.model.n_layers * (attention + gate + experts));
  });
});

describe('the weight bytes a prefill reads at least once (its floor with few tokens)', () => {
  it('of Mistral-7B: every weight once, and P rows of the embedding', () => {
    const perLayer = 4096 * 4096 * 2 + 1024 * 4096 * 2 + 3 * 14336 * 4096 + 2 * 4096;  // wq, wo, wk, wv, w1-w3, 2 norms
    expect(weightBytesRead(mistral, 16)).toBe(2 * (32 * perLayer + 4096 + 32000 * 4096 + 16 * 4096));
    expect(weightBytesRead(mistral, 1)).toBe(weightBytesPerToken(mistral));
  });

  it('of Mixtral: the experts that P uniformly routed tokens use on average, toward all of them', () => {
    const experts = mixtral.model.n_layers * 8 * 3 * 14336 * 4096 * 2;
    const other = weightBytesRead(mixtral, 1) - experts * (2 / 8);
    expect(weightBytesRead(mixtral, 16)).toBeCloseTo(other + 15 * 4096 * 2 + experts * (1 - 0.75 ** 16), -3);
    expect(weightBytesRead(mixtral, 512) - other - 511 * 4096 * 2).toBeCloseTo(experts, -3);
  });
});

describe('the decode models', () => {
  it('take the longest timed prefill in one call, and keep a 128-token decode prompt', () => {
    for (const c of DECODE_CASES) {
      expect(decodePlan(c).options.maxTokens).toBeGreaterThanOrEqual(Math.max(...PREFILL_TOKENS));
      expect(c.prompt).toBe(128);
    }
  });
});
