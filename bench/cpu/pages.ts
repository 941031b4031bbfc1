/**
 * Paired A/B of where the weights live during decode: the mapped checkpoint (4 KiB file pages)
 * against a private copy on 2 MiB pages (loadModel's weights: 'map' | 'copy'). Each variant runs in
 * a child process of its own (bench/cpu/pages-child.ts); they take turns, 16 decode steps each, in
 * the order A B B A per round, so the machine's drifting memory speed (bench/RESULTS.md) falls on
 * both alike. The figure is the median over segments of the per-pair ratio.
 *
 *   tsx bench/cpu/pages.ts [--only NAME,…] [--rounds N]
 *
 * Uses the weights of `npm run bench` (.bench/weights/, written by it if missing).
 */
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { packageRoot } from '../../compiler/paths.js';
import { BENCH_MODELS } from './models.js';
import { inTurns, median, servingChild } from './tools.js';
import { ensureWeights } from './weights.js';

const { values: args } = parseArgs({ options: { only: { type: 'string' }, rounds: { type: 'string', default: '12' } } });
const STEPS = 16;
const benchDir = join(packageRoot(), '.bench');
const models = BENCH_MODELS.filter((m) => args.only === undefined || args.only.split(',').includes(m.name));

/** A child holding one model; ask(n) decodes n tokens there and answers ms/token. */
const child = (dir: string, how: 'map' | 'copy') =>
  servingChild(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'pages-child.ts'), dir, how, join(benchDir, 'cache')], availableParallelism());

for (const m of models) {
  const weights = await ensureWeights(join(benchDir, 'weights'), m, (l) => console.error(l));
  const mapped = await child(weights.dir, 'map');
  const copied = await child(weights.dir, 'copy');
  const { a: msMap, b: msCopy } = await inTurns(async () => (await mapped.ask(STEPS)).msPerToken!, async () => (await copied.ask(STEPS)).msPerToken!,
    Number(args.rounds));
  const ratios = msMap.map((ms, i) => ms / msCopy[i]!);
  mapped.close();
  copied.close();
  console.log(`${m.name}: map ${median(msMap).toFixed(2)} ms/token, copy on huge pages ${median(msCopy).toFixed(2)} ms/token; ` +
    `copy/map speed ${median(ratios).toFixed(3)}× (median of ${ratios.length} pairs, range ${Math.min(...ratios).toFixed(2)}-${Math.max(...ratios).toFixed(2)}); ` +
    `load ${mapped.ready.loadSeconds!.toFixed(2)} s vs ${copied.ready.loadSeconds!.toFixed(2)} s`);
}
