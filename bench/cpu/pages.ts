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
import { spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { packageRoot } from '../../compiler/paths.js';
import { BENCH_MODELS } from './models.js';
import { ensureWeights } from './weights.js';

const { values: args } = parseArgs({ options: { only: { type: 'string' }, rounds: { type: 'string', default: '12' } } });
const rounds = Number(args.rounds);
const STEPS = 16;
const benchDir = join(packageRoot(), '.bench');
const models = BENCH_MODELS.filter((m) => args.only === undefined || args.only.split(',').includes(m.name));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** A child holding one model; ask(n) decodes n tokens there and resolves to ms/token. */
async function child(dir: string, how: 'map' | 'copy') {
  const proc = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'pages-child.ts'), dir, how, join(benchDir, 'cache')], {
    stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, OMP_NUM_THREADS: String(availableParallelism()) },
  });
  const lines = createInterface({ input: proc.stdout! })[Symbol.asyncIterator]();
  const next = async () => JSON.parse((await lines.next()).value as string) as { loadSeconds?: number; msPerToken?: number };
  const { loadSeconds } = await next();
  return {
    loadSeconds: loadSeconds!,
    ask: async (n: number) => (proc.stdin!.write(`${n}\n`), (await next()).msPerToken!),
    close: () => proc.stdin!.end(),
  };
}

for (const m of models) {
  const weights = await ensureWeights(join(benchDir, 'weights'), m, (l) => console.error(l));
  const mapped = await child(weights.dir, 'map');
  const copied = await child(weights.dir, 'copy');
  const ratios: number[] = [];
  const msMap: number[] = [];
  const msCopy: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const a1 = await mapped.ask(STEPS), b1 = await copied.ask(STEPS), b2 = await copied.ask(STEPS), a2 = await mapped.ask(STEPS);
    msMap.push(a1, a2);
    msCopy.push(b1, b2);
    ratios.push(a1 / b1, a2 / b2);
  }
  mapped.close();
  copied.close();
  console.log(`${m.name}: map ${median(msMap).toFixed(2)} ms/token, copy on huge pages ${median(msCopy).toFixed(2)} ms/token; ` +
    `copy/map speed ${median(ratios).toFixed(3)}× (median of ${ratios.length} pairs, range ${Math.min(...ratios).toFixed(2)}-${Math.max(...ratios).toFixed(2)}); ` +
    `load ${mapped.loadSeconds.toFixed(2)} s vs ${copied.loadSeconds.toFixed(2)} s`);
}
