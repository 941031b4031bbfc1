/**
 * A plain decode loop on one benchmark model: a 512-token prompt, then N decode steps; prints
 * ms/token on stderr. What the profile (`perf record -e cpu-clock`) and the OpenMP wait-policy runs
 * of "Why f32 decode stops at 76%" in bench/RESULTS.md ran:
 *
 *   OMP_NUM_THREADS=2 perf record -e cpu-clock -F 1000 -o /tmp/perf.data -- node --import tsx bench/cpu/decode-loop.ts dense-300m-f32 300
 *   OMP_WAIT_POLICY=passive OMP_NUM_THREADS=2 npx tsx bench/cpu/decode-loop.ts dense-300m-f32 300
 */
import { join } from 'node:path';
import { packageRoot } from '../../compiler/paths.js';
import { loadModel } from '../../runtime/model.js';
import { BENCH_MODELS } from './models.js';
import { ensureWeights } from './weights.js';

const [name = 'dense-300m-f32', stepsArg = '300'] = process.argv.slice(2);
const model = BENCH_MODELS.find((m) => m.name === name);
if (model === undefined) throw new Error(`model: one of ${BENCH_MODELS.map((m) => m.name).join(', ')}`);
const benchDir = join(packageRoot(), '.bench');
const weights = await ensureWeights(join(benchDir, 'weights'), model, (l) => console.error(l));
const PROMPT = 512;
const steps = Number(stepsArg);
const loaded = await loadModel(weights.dir, { cacheDir: join(benchDir, 'cache'), maxTokens: PROMPT, maxSeqLen: 1024 });
await loaded.forward(Array.from({ length: PROMPT }, (_, i) => (i * 7919 + 13) % 32000), 0, false);
const started = performance.now();
for (let i = 0; i < steps; i++) await loaded.forward([(i * 104729 + 7) % 32000], PROMPT + i, false);
console.error(`${name}: ${((performance.now() - started) / steps).toFixed(2)} ms/token over ${steps} decode steps after ${PROMPT} prompt tokens`);
loaded.close();
