/**
 * Paired A/B of one benchmark model's decode under two environments or two ways of holding the
 * weights:
 *
 *   tsx bench/cpu/env-ab.ts --model dense-300m-f32 --a OMP_PROC_BIND=false --b OMP_PROC_BIND=true [--rounds 8]
 *   tsx bench/cpu/env-ab.ts --model dense-300m-bf16 --b-weights copy      (weights mapped vs copied onto 2 MiB pages)
 *
 * (A switch inside the library, e.g. changes 11 and 12 of bench/RESULTS.md, is compared by reading
 * an environment variable there for the time of the experiment.) Each side is a child process of
 * its own (bench/cpu/decode-child.ts) with its variables and weights mode set; they take turns, 16 decode steps each, A B B A per round, so the machine's
 * drifting memory speed (bench/RESULTS.md) falls on both alike. The read bandwidth is probed
 * (bandwidth.cpp, in a process of its own) before every segment, so the pairs can be split by the
 * memory phase they met: a change may help only when memory is fast. Prints each side's median
 * ms/token and the median over pairs of the speed ratio b/a, overall and per phase. Uses the
 * weights of `npm run bench`.
 */
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { packageRoot } from '../../compiler/paths.js';
import { BandwidthProbe, buildBandwidthProbe } from './bandwidth.js';
import { BENCH_MODELS } from './models.js';
import { median } from '../median.js';
import { inTurns, servingChild } from './tools.js';
import { ensureWeights } from './weights.js';

const { values: args } = parseArgs({
  options: { model: { type: 'string', default: 'dense-300m-f32' }, a: { type: 'string', multiple: true, default: [] },
    b: { type: 'string', multiple: true, default: [] }, rounds: { type: 'string', default: '8' },
    'a-weights': { type: 'string', default: 'map' }, 'b-weights': { type: 'string', default: 'map' } },
});
const STEPS = 16;
// Each child decodes 2 × STEPS tokens a round after its 512-token prompt, within decode-child's 1024 positions.
const rounds = Number(args.rounds);
if (!Number.isInteger(rounds) || rounds < 1 || rounds > 16) throw new Error(`--rounds: a whole number from 1 to 16 (each child has 1024 positions), not ${args.rounds}`);
const benchDir = join(packageRoot(), '.bench');
const model = BENCH_MODELS.find((m) => m.name === args.model);
if (model === undefined) throw new Error(`--model: one of ${BENCH_MODELS.map((m) => m.name).join(', ')}`);
/** NAME=VALUE pairs → an environment. */
const envOf = (pairs: string[]) => Object.fromEntries(pairs.map((p) => {
  const eq = p.indexOf('=');
  if (eq <= 0) throw new Error(`--a/--b take NAME=VALUE, not ${p}`);
  return [p.slice(0, eq), p.slice(eq + 1)];
}));
const how = (w: string) => {
  if (w !== 'map' && w !== 'copy') throw new Error(`--a-weights/--b-weights: map or copy, not ${w}`);
  return w;
};
const [howA, howB] = [how(args['a-weights']!), how(args['b-weights']!)];
const weights = await ensureWeights(join(benchDir, 'weights'), model, (l) => console.error(l));
const child = (env: Record<string, string>, weightsHow: string) => servingChild(process.execPath,
  ['--import', 'tsx', join(import.meta.dirname, 'decode-child.ts'), weights.dir, weightsHow, join(benchDir, 'cache')], availableParallelism(), env);
const a = await child(envOf(args.a!), howA);
const b = await child(envOf(args.b!), howB);
const label = (pairs: string[], w: string) => [...pairs, ...(w === 'copy' ? ['weights copied'] : [])].join(' ') || 'as is';
const probe = await BandwidthProbe.start(buildBandwidthProbe(join(benchDir, 'bin')), availableParallelism());
const gbs = { a: [] as number[], b: [] as number[] };
const segment = async (side: 'a' | 'b', c: typeof a) => (gbs[side].push(await probe.measure()), (await c.ask(STEPS)).msPerToken!);
const { a: msA, b: msB } = await inTurns(() => segment('a', a), () => segment('b', b), rounds);
a.close();
b.close();
probe.close();
const ratios = msA.map((ms, i) => ms / msB[i]!);
const summary = (rs: number[]) => rs.length === 0 ? 'no pairs' :
  `${median(rs).toFixed(3)}× (median of ${rs.length} pairs, range ${Math.min(...rs).toFixed(2)}-${Math.max(...rs).toFixed(2)})`;
// A pair met the fast phase when both of its probes read 40 GB/s or more (this machine: ~30 or ~48-55).
const fast = ratios.filter((_, i) => gbs.a[i]! >= 40 && gbs.b[i]! >= 40);
const slow = ratios.filter((_, i) => gbs.a[i]! < 40 && gbs.b[i]! < 40);
console.log(`${model.name}: A (${label(args.a!, args['a-weights']!)}) ${median(msA).toFixed(2)} ms/token, B (${label(args.b!, args['b-weights']!)}) ${median(msB).toFixed(2)} ms/token; ` +
  `B/A speed ${summary(ratios)}; fast memory (both probes ≥ 40 GB/s) ${summary(fast)}; slow (both < 40) ${summary(slow)}; ` +
  `probes ${Math.min(...gbs.a, ...gbs.b).toFixed(0)}-${Math.max(...gbs.a, ...gbs.b).toFixed(0)} GB/s; ` +
  `load A ${a.ready.loadSeconds!.toFixed(2)} s, B ${b.ready.loadSeconds!.toFixed(2)} s`);
