/**
 * How often the GPU logits check's tokens meet a routing near-tie (bench/gpu/cases.ts ROUTING_MARGIN):
 * for tiny-moe and tiny-moe-top1 in bf16, weights as checkLogits writes them, the fraction of whole
 * draws of tokens whose smallest routingGap (test/reference/forward.ts) reaches each margin, the
 * fraction of single decisions under it, and what drawTokens' redrawing costs at ROUTING_MARGIN; then the
 * smallest gap of each case's seed named (e.g. the failing seeds of bench/gpu/runs/2026-11-26-h200-second).
 *
 *   tsx bench/gpu/routing-ties.ts [--seeds gpu-tiny-moe-bf16:1577512572,gpu-tiny-moe-top1-bf16:1813623730,...]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeRandomWeights } from '../../compiler/weights/random.js';
import { referenceLogits, type WeightLookup } from '../../test/reference/forward.js';
import { mulberry32, randomTokens } from '../../test/reference/random.js';
import { LOGITS_CASES, ROUTING_MARGIN, shippedConfig, type LogitsCase } from './cases.js';
import { drawTokens, readWeightsF32 } from './logits.js';

const { values } = parseArgs({ options: { seeds: { type: 'string' } } });
const work = mkdtempSync(join(tmpdir(), 'mc-routing-ties-'));

async function weightsOf(c: LogitsCase, seed: number): Promise<WeightLookup> {
  const { safetensorsPath } = await writeRandomWeights(shippedConfig(c.config, { as: c.name }), join(work, `${c.name}-${seed}`), { seed, dtype: c.dtype });
  return readWeightsF32(safetensorsPath);
}
/** The smallest routingGap over every layer and position of these tokens; each decision's into `all`. */
function smallestGap(c: LogitsCase, weight: WeightLookup, tokens: number[], all: number[] = []): number {
  const config = shippedConfig(c.config, { as: c.name });
  let gap = Infinity;
  referenceLogits(config, weight, tokens, { gate: (_l, _p, d) => { gap = Math.min(gap, d.gap); all.push(d.gap); } });
  return gap;
}

try {
  for (const name of ['gpu-tiny-moe-bf16', 'gpu-tiny-moe-top1-bf16']) {
    const c = LOGITS_CASES.find((x) => x.name === name)!;
    const config = shippedConfig(c.config, { as: c.name }), vocab = config.vocab_size;
    const gaps: number[] = [], decisions: number[] = [], forwards: number[] = [];
    for (const seed of [11, 22, 33, 44]) {
      const weight = await weightsOf(c, seed);
      const rng = mulberry32(seed);
      for (let i = 0; i < 50; i++) gaps.push(smallestGap(c, weight, randomTokens(rng, c.prompt + c.decode, vocab), decisions));
      for (let i = 0; i < 5; i++) forwards.push(drawTokens(c, config, weight, rng).forwards);
    }
    for (const margin of [0.005, 0.01, 0.02, 0.04]) {
      console.log(`${name}: ${(gaps.filter((g) => g >= margin).length / gaps.length).toFixed(2)} of ${gaps.length} whole draws keep every decision ${margin} from a tie; ${(decisions.filter((g) => g < margin).length / decisions.length).toFixed(3)} of their ${decisions.length} decisions are nearer`);
    }
    console.log(`${name}: drawTokens (ROUTING_MARGIN ${ROUTING_MARGIN[c.dtype]}) took ${(forwards.reduce((a, b) => a + b, 0) / forwards.length).toFixed(1)} reference passes on average, at most ${Math.max(...forwards)}, over ${forwards.length} draws`);
    const named = (values.seeds ?? '').split(',').filter((s) => s.startsWith(`${name}:`)).map((s) => Number(s.slice(name.length + 1)));
    for (const seed of named) {
      // checkLogits before 2026-11-26's fix: the seed's first draw of tokens.
      const gap = smallestGap(c, await weightsOf(c, seed), randomTokens(mulberry32(seed), c.prompt + c.decode, vocab));
      console.log(`${name}: seed ${seed}: smallest gap of its first draw ${gap.toExponential(1)}`);
    }
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
