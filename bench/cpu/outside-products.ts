/**
 * How much of a CPU decode step lies outside the matrix-vector products: the dense f32 benchmark
 * model's own decode steps (bench/cpu/pages-child.ts) against the products of the same shapes alone
 * (bench/cpu/decode-step.cpp --serve), each in a child process of its own, taking turns 16 steps at a
 * time in the order A B B A, so that both see the same seconds of this machine's drifting memory.
 *
 *   tsx bench/cpu/outside-products.ts [--model dense-300m-f32|dense-300m-bf16] [--rounds N]
 */
import { spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { packageRoot } from '../../compiler/paths.js';
import { BENCH_MODELS } from './models.js';
import { ensureWeights } from './weights.js';

const { values: args } = parseArgs({ options: { model: { type: 'string', default: 'dense-300m-f32' }, rounds: { type: 'string', default: '8' } } });
const root = packageRoot();
const benchDir = join(root, '.bench');
const model = BENCH_MODELS.find((m) => m.name === args.model && m.kind === 'dense');
if (model === undefined) throw new Error(`--model: one of ${BENCH_MODELS.filter((m) => m.kind === 'dense').map((m) => m.name).join(', ')}`);
const STEPS = 16;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const exe = join(benchDir, 'bin', 'decode-step');
await execa('g++', ['-std=c++20', '-O3', '-march=native', '-fopenmp', `-I${join(root, 'runtime', 'abi')}`, `-I${join(root, 'templates', 'include')}`,
  join(root, 'bench', 'cpu', 'decode-step.cpp'), '-o', exe]);
const weights = await ensureWeights(join(benchDir, 'weights'), model, (l) => console.error(l));

/** A child answering one JSON line per request line. */
async function child(command: string, argv: string[], field: string) {
  const proc = spawn(command, argv, { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, OMP_NUM_THREADS: String(availableParallelism()) } });
  const lines = createInterface({ input: proc.stdout! })[Symbol.asyncIterator]();
  const next = async () => JSON.parse((await lines.next()).value as string) as Record<string, number>;
  await next();  // ready
  return { ask: async (n: number) => (proc.stdin!.write(`${n}\n`), (await next())[field]!), close: () => proc.stdin!.end() };
}

const ours = await child(process.execPath, ['--import', 'tsx', join(root, 'bench', 'cpu', 'pages-child.ts'), weights.dir, 'map', join(benchDir, 'cache')], 'msPerToken');
const products = await child(exe, [model.dtype, '--serve'], 'msPerStep');
const modelMs: number[] = [], productMs: number[] = [], gaps: number[] = [];
for (let r = 0; r < Number(args.rounds); r++) {
  const a1 = await ours.ask(STEPS), b1 = await products.ask(STEPS), b2 = await products.ask(STEPS), a2 = await ours.ask(STEPS);
  modelMs.push(a1, a2);
  productMs.push(b1, b2);
  gaps.push(a1 - b1, a2 - b2);
}
ours.close();
products.close();
console.log(`${model.name}: model ${median(modelMs).toFixed(2)} ms/token, its products alone ${median(productMs).toFixed(2)} ms/step; ` +
  `outside the products ${median(gaps).toFixed(2)} ms/token (median of ${gaps.length} pairs, range ${Math.min(...gaps).toFixed(2)} to ${Math.max(...gaps).toFixed(2)})`);
