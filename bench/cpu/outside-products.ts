/**
 * How much of a CPU decode step lies outside the matrix-vector products: the dense f32 benchmark
 * model's own decode steps (bench/cpu/decode-child.ts) against the products of the same shapes alone
 * (bench/cpu/decode-step.cpp --serve), each in a child process of its own, taking turns 16 steps at a
 * time in the order A B B A, so that both see the same seconds of this machine's drifting memory.
 *
 *   tsx bench/cpu/outside-products.ts [--model dense-300m-f32|dense-300m-bf16] [--rounds N]
 */
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { packageRoot } from '../../compiler/paths.js';
import { BENCH_MODELS } from './models.js';
import { median } from '../median.js';
import { buildTool, inTurns, servingChild } from './tools.js';
import { ensureWeights } from './weights.js';

const { values: args } = parseArgs({ options: { model: { type: 'string', default: 'dense-300m-f32' }, rounds: { type: 'string', default: '8' } } });
const root = packageRoot();
const benchDir = join(root, '.bench');
const model = BENCH_MODELS.find((m) => m.name === args.model && m.kind === 'dense');
if (model === undefined) throw new Error(`--model: one of ${BENCH_MODELS.filter((m) => m.kind === 'dense').map((m) => m.name).join(', ')}`);
const STEPS = 16;

const exe = buildTool(join(benchDir, 'bin'), 'decode-step');
const weights = await ensureWeights(join(benchDir, 'weights'), model, (l) => console.error(l));
const threads = availableParallelism();
const ours = await servingChild(process.execPath, ['--import', 'tsx', join(root, 'bench', 'cpu', 'decode-child.ts'), weights.dir, 'map', join(benchDir, 'cache')], threads);
const products = await servingChild(exe, [model.dtype, '--serve'], threads);
const { a: modelMs, b: productMs } = await inTurns(async () => (await ours.ask(STEPS)).msPerToken!, async () => (await products.ask(STEPS)).msPerStep!,
  Number(args.rounds));
const gaps = modelMs.map((ms, i) => ms - productMs[i]!);
ours.close();
products.close();
console.log(`${model.name}: model ${median(modelMs).toFixed(2)} ms/token, its products alone ${median(productMs).toFixed(2)} ms/step; ` +
  `outside the products ${median(gaps).toFixed(2)} ms/token (median of ${gaps.length} pairs, range ${Math.min(...gaps).toFixed(2)} to ${Math.max(...gaps).toFixed(2)})`);
