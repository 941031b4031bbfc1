/**
 * How far the CUDA library's MoE routing decisions drift from the float64 reference's, measured
 * without a GPU: the library built for the emulator (test/cuda/emu) with its gate kernel also
 * appending each token's gate logits to a file (bench/gpu/gate-log.ts), run as the GPU logits
 * check runs it (prompt in chunks, then graph-replayed decode steps) on random weights and first
 * draws of tokens. For every decision and every pair of a chosen expert i and an unchosen j:
 *
 *   drift = |(g_i − g_j) − (ref_i − ref_j)| / tieScale(x, gate, i, j)
 *
 * in the units of routingGap (test/reference/forward.ts): a decision whose gap exceeds its drift
 * keeps its experts. Also the same drift over the logits' RMS (the older yardstick) and the flips
 * (the library chose other experts). ROUTING_MARGIN (bench/gpu/cases.ts) is set from this; what a
 * margin costs in redraws: bench/gpu/routing-ties.ts.
 * Decisions downstream of a flip (later layers, same or later positions) are left out: their input
 * differs by more than rounding.
 *
 *   tsx bench/gpu/routing-drift.ts [--seeds 20] [--cases gpu-tiny-moe-bf16,...]
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { renderCudaSources } from '../../compiler/emit/render-cuda.js';
import { writeRandomWeights } from '../../compiler/weights/random.js';
import { buildEmulatedLibrary } from '../../test/cuda/emu/emulate.js';
import { moeRoute, referenceLogits, tieScale, type GateDecision } from '../../test/reference/forward.js';
import { mulberry32, randomTokens } from '../../test/reference/random.js';
import { LOGITS_CASES, logitsPlan, shippedConfig, type LogitsCase } from './cases.js';
import { GATE_LOG_ENV, gateLoggingSources, parseGateLog } from './gate-log.js';
import { openCheckpoint } from './libraries.js';
import { readWeightsF32, runChunked } from './logits.js';

const { values } = parseArgs({ options: { seeds: { type: 'string', default: '20' }, cases: { type: 'string', default: 'gpu-tiny-moe-bf16,gpu-tiny-moe-top1-bf16,gpu-tiny-moe-f16' } } });
const work = mkdtempSync(join(tmpdir(), 'mc-routing-drift-'));
const log = join(work, 'gates.txt');

async function gateLoggingLibrary(c: LogitsCase): Promise<string> {
  return buildEmulatedLibrary(gateLoggingSources(renderCudaSources(logitsPlan(c)).files), join(work, c.name));
}

const quantile = (xs: number[], q: number) => xs[Math.min(xs.length - 1, Math.floor(q * xs.length))]!;
const seeds = Number(values.seeds);
try {
  for (const name of values.cases!.split(',')) {
    const c = LOGITS_CASES.find((x) => x.name === name);
    if (c === undefined) throw new Error(`routing-drift.ts: no logits case ${name} (bench/gpu/cases.ts LOGITS_CASES)`);
    const config = shippedConfig(c.config, { as: c.name });
    const moe = config.moe;
    if (moe === null) throw new Error(`routing-drift.ts: ${name} is not an MoE model`);
    const library = await gateLoggingLibrary(c);
    const drift: number[] = [], driftRms: number[] = [];
    let flips = 0, left = 0;
    for (let s = 0; s < seeds; s++) {
      const seed = 1000 + s;
      const { safetensorsPath } = await writeRandomWeights(config, join(work, 'model'), { seed, dtype: c.dtype });
      const weight = await readWeightsF32(safetensorsPath);
      const tokens = randomTokens(mulberry32(seed), c.prompt + c.decode, config.vocab_size);
      const ref: GateDecision[][] = Array.from({ length: config.n_layers }, () => []);
      referenceLogits(config, weight, tokens, { gate: (l, p, d) => { ref[l]![p] = d; } });
      writeFileSync(log, '');
      process.env[GATE_LOG_ENV] = log;
      process.env.MC_EMU_SEED = String(seed);
      const model = await openCheckpoint(library, logitsPlan(c), safetensorsPath);
      try {
        runChunked(model, tokens, c.prompt, c.chunk, config.vocab_size);
      } finally {
        model.close();
      }
      const lib = parseGateLog(readFileSync(log, 'utf8'), config.n_layers, tokens.length, moe.num_experts);
      let flippedAt = Infinity;  // the first position whose routing flipped in an earlier layer
      for (let l = 0; l < config.n_layers; l++) {
        const gate = weight(`layers.${l}.feed_forward.gate.weight`);
        let flippedHere = Infinity;
        for (let p = 0; p < tokens.length; p++) {
          const d = ref[l]![p]!, g = lib[l]![p]!;  // parseGateLog refuses a log without every position
          if (p >= flippedAt) { left++; continue; }
          const chosen = moeRoute(d.logits, moe.num_experts_per_tok).experts;
          const theirs = moeRoute(g, moe.num_experts_per_tok).experts;
          if ([...chosen].sort().join() !== [...theirs].sort().join()) { flips++; flippedHere = Math.min(flippedHere, p); }
          const rms = Math.sqrt(d.logits.reduce((a, v) => a + v * v, 0) / d.logits.length);
          let worst = 0, worstRms = 0;
          for (const i of chosen) {
            for (let j = 0; j < moe.num_experts; j++) {
              if (chosen.includes(j)) continue;
              const moved = Math.abs((g[i]! - g[j]!) - (d.logits[i]! - d.logits[j]!));
              worst = Math.max(worst, moved / tieScale(d.input, gate, i, j));
              worstRms = Math.max(worstRms, moved / rms);
            }
          }
          drift.push(worst);
          driftRms.push(worstRms);
        }
        flippedAt = Math.min(flippedAt, flippedHere);
      }
    }
    for (const xs of [drift, driftRms]) xs.sort((a, b) => a - b);
    const row = (xs: number[]) => `median ${quantile(xs, 0.5).toExponential(1)}, p99 ${quantile(xs, 0.99).toExponential(1)}, p99.9 ${quantile(xs, 0.999).toExponential(1)}, max ${xs[xs.length - 1]!.toExponential(1)}`;
    console.log(`${name}: ${drift.length} decisions from ${seeds} seeds (${flips} flipped, ${left} downstream of a flip left out)`);
    console.log(`  drift in routingGap's units (tieScale): ${row(drift)}`);
    console.log(`  drift over the gate logits' RMS:         ${row(driftRms)}`);
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
