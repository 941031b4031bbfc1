/**
 * The tokens the GPU logits check runs (bench/gpu/logits.ts drawTokens): for an MoE model, no routing
 * decision of the float64 reference within ROUTING_MARGIN of a tie, where 16-bit rounding may route a
 * token to the other expert (the GPU check of 2026-11-26 failed 27 of 170 bf16 tiny-moe runs so).
 */
import { describe, expect, it } from 'vitest';
import { LOGITS_CASES, ROUTING_MARGIN, shippedConfig } from '../../../bench/gpu/cases.js';
import { drawTokens } from '../../../bench/gpu/logits.js';
import { referenceLogits } from '../../reference/forward.js';
import { lookup, mulberry32, randomTokens, randomWeights } from '../../reference/random.js';

const logitsCase = (name: string) => LOGITS_CASES.find((c) => c.name === name)!;

/** Every routing decision's gap, recomputed apart from drawTokens. */
function gaps(name: string, seed: number, tokens: number[]): number[] {
  const config = shippedConfig(logitsCase(name).config);
  const out: number[] = [];
  referenceLogits(config, lookup(randomWeights(config, seed)), tokens, { gate: (_l, _p, d) => out.push(d.gap) });
  return out;
}

describe('the tokens of the GPU logits check', () => {
  it('take the first draw of the seed for a dense model, with its reference logits', () => {
    const c = logitsCase('gpu-tiny-dense-bf16');
    const config = shippedConfig(c.config);
    const weight = lookup(randomWeights(config, 5));
    const drawn = drawTokens(c, config, weight, mulberry32(5));
    expect(drawn.tokens).toEqual(randomTokens(mulberry32(5), c.prompt + c.decode, config.vocab_size));
    expect(drawn.forwards).toBe(1);
    expect(drawn.reference).toEqual(referenceLogits(config, weight, drawn.tokens));
  });

  for (const name of ['gpu-tiny-moe-bf16', 'gpu-tiny-moe-top1-bf16']) {
    it(`keep every routing decision of ${name} ${ROUTING_MARGIN.bf16} from a tie, drawing again only from the first near-tie on`, () => {
      const c = logitsCase(name);
      const config = shippedConfig(c.config);
      let redrawn = 0;
      for (const seed of [1, 2, 3, 4, 5, 6]) {
        const weight = lookup(randomWeights(config, seed));
        const drawn = drawTokens(c, config, weight, mulberry32(seed));
        expect(drawn.tokens.length).toBe(c.prompt + c.decode);
        expect(Math.min(...gaps(name, seed, drawn.tokens))).toBeGreaterThanOrEqual(ROUTING_MARGIN.bf16);
        expect(drawn.gap).toBe(Math.min(...gaps(name, seed, drawn.tokens)));
        expect(drawn.reference).toEqual(referenceLogits(config, weight, drawn.tokens));
        if (drawn.forwards === 1) continue;
        redrawn++;
        // The first draw's tokens before its first near-tie are kept.
        const first = randomTokens(mulberry32(seed), c.prompt + c.decode, config.vocab_size);
        const firstGaps = gaps(name, seed, first);
        const positions = c.prompt + c.decode;
        const firstTie = Math.min(...firstGaps.map((g, i) => (g < ROUTING_MARGIN.bf16 ? i % positions : positions)));
        expect(drawn.tokens.slice(0, firstTie)).toEqual(first.slice(0, firstTie));
      }
      // Most first draws of 42 tokens hold a near-tie: the redraw path ran.
      expect(redrawn).toBeGreaterThan(0);
    });
  }
});
