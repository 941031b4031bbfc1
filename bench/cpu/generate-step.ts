/**
 * µs a generated token from loadModel's generate() alone, one arm per process: the absolute figure
 * behind step-overhead.ts's differences, for A/B runs of two builds of the addon taking turns.
 * Uses the model step-overhead.ts writes (run it first with the same --vocab and --steps).
 *
 *   tsx bench/cpu/generate-step.ts [--vocab V] [--steps N] [--rounds R]
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { packageRoot } from '../../compiler/paths.js';
import { loadModel } from '../../runtime/model.js';
import { median } from '../median.js';

const { values: args } = parseArgs({
  options: { vocab: { type: 'string', default: '32768' }, steps: { type: 'string', default: '200' }, rounds: { type: 'string', default: '5' } },
});
const VOCAB = Number(args.vocab), STEPS = Number(args.steps), ROUNDS = Number(args.rounds);
const dir = join(packageRoot(), '.bench', 'step-overhead', `v${VOCAB}-s${STEPS}`);
if (!existsSync(join(dir, 'params.json'))) throw new Error(`${dir}: no model; run bench/cpu/step-overhead.ts --vocab ${VOCAB} --steps ${STEPS} first`);
const model = await loadModel(dir, { cacheDir: join(packageRoot(), '.bench', 'cache'), maxTokens: 8, threads: 1 });
const prompt = Array.from({ length: 8 }, (_, i) => (i * 7919 + 13) % VOCAB);
const times: number[] = [];
for (let round = 0; round <= ROUNDS; round++) {  // round 0 warms up
  const tokens = model.generate(prompt, { maxTokens: STEPS + 1 });
  await tokens.next();  // the prompt, and the first token from its logits
  for (;;) {
    const started = performance.now();
    if ((await tokens.next()).done) break;
    if (round > 0) times.push((performance.now() - started) * 1000);
  }
}
model.close();
console.log(`generate() of a 1-layer model (dim 32) with a vocabulary of ${VOCAB}, 1 thread: median ${median(times).toFixed(1)} µs a token over ${ROUNDS} × ${STEPS} tokens`);
