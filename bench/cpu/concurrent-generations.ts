/**
 * Several generations sharing one model (runtime/model.ts: a generation's KV cache is saved and put
 * back around other calls): two greedy generations one after the other against the same two at
 * once, with KV snapshots (the default) and with the replay they replaced as the peer (a
 * generation displaced by another call runs its whole sequence again; what a library without
 * mc_kv_* gets), in one process on the same weights. Prints the table bench/RESULTS.md quotes.
 *
 *   tsx bench/cpu/concurrent-generations.ts [--tokens N] [--repeats R]
 *
 * The model is the bundled tiny-moe with seeded random bf16 weights (written to .bench/concurrent/).
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadModelConfig } from '../../compiler/config/load.js';
import { packageRoot } from '../../compiler/paths.js';
import { writeRandomWeights } from '../../compiler/weights/random.js';
import { loadModel, type LoadedModel } from '../../runtime/model.js';
import { withoutSnapshots } from '../../test/e2e/without-snapshots.js';

const { values: args } = parseArgs({ options: { tokens: { type: 'string', default: '400' }, repeats: { type: 'string', default: '3' } } });
const TOKENS = Number(args.tokens);
const REPEATS = Number(args.repeats);
const PROMPTS = [[1, 2, 3], [4, 5, 6]];

const root = packageRoot();
const dir = join(root, '.bench', 'concurrent', 'tiny-moe');
await writeRandomWeights(loadModelConfig(join(root, 'configs', 'models', 'tiny-moe')), dir, { seed: 0, dtype: 'bf16' });

async function generation(model: LoadedModel, prompt: number[]): Promise<string> {
  const tokens: number[] = [];
  for await (const t of model.generate(prompt, { maxTokens: TOKENS })) tokens.push(t);
  return tokens.join();
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

console.log(`two greedy generations of ${TOKENS} tokens, tiny-moe bf16 (CPU), median of ${REPEATS}:`);
console.log('| KV cache between steps | one after the other (ms) | at once (ms) | at once / one after the other | tokens equal |');
console.log('|---|---|---|---|---|');
for (const mode of ['snapshots', 'replay'] as const) {
  const model = await loadModel(dir, { cacheDir: join(root, '.bench', 'concurrent', 'cache') });
  if (mode === 'replay') withoutSnapshots(model);
  const alone = [await generation(model, PROMPTS[0]!), await generation(model, PROMPTS[1]!)];  // a warm-up, and the tokens to compare
  const sequential: number[] = [], together: number[] = [];
  let equal = true;
  for (let r = 0; r < REPEATS; r++) {
    let t = performance.now();
    for (const p of PROMPTS) await generation(model, p);
    sequential.push(performance.now() - t);
    t = performance.now();
    const both = await Promise.all(PROMPTS.map((p) => generation(model, p)));
    together.push(performance.now() - t);
    equal &&= both.every((tokens, i) => tokens === alone[i]);
  }
  model.close();
  const [s, c] = [median(sequential), median(together)];
  console.log(`| ${mode === 'snapshots' ? 'saved and put back (mc_kv_save / mc_kv_load)' : 'replayed (the peer)'} | ${s.toFixed(0)} | ${c.toFixed(0)} | ${(c / s).toFixed(1)}× | ${equal ? 'yes' : 'no'} |`);
}
