/**
 * What loading one benchmark model costs and which pages its weights end up on: load time, the
 * first forward (16 tokens: page faults of a mapping included), one decode step, and the process's
 * FilePmdMapped / AnonHugePages (2 MiB entries of the file mapping, or of a copy) from smaps_rollup.
 * bench/RESULTS.md cites it for the cost of `weights: 'copy'` and for change 13.
 *
 *   tsx bench/cpu/load-pages.ts MODEL map|copy [--drop]     (--drop: the checkpoint out of the page cache first)
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../compiler/paths.js';
import { loadModel } from '../../runtime/model.js';
import { BENCH_MODELS } from './models.js';
import { dropFromPageCache } from './tools.js';
import { ensureWeights } from './weights.js';

const [name, how = 'map', flag] = process.argv.slice(2);
const model = BENCH_MODELS.find((m) => m.name === name);
if (model === undefined || (how !== 'map' && how !== 'copy')) {
  throw new Error(`usage: load-pages.ts MODEL map|copy [--drop]; MODEL one of ${BENCH_MODELS.map((m) => m.name).join(', ')}`);
}
const benchDir = join(packageRoot(), '.bench');
const weights = await ensureWeights(join(benchDir, 'weights'), model, (l) => console.error(l));
if (flag === '--drop') dropFromPageCache(weights.safetensorsPath);
const t0 = performance.now();
const loaded = await loadModel(weights.dir, { weights: how, cacheDir: join(benchDir, 'cache'), maxTokens: 512, maxSeqLen: 1024 });
const t1 = performance.now();
await loaded.forward(Array.from({ length: 16 }, (_, i) => i + 1), 0, false);
const t2 = performance.now();
await loaded.forward([5], 16, false);
const t3 = performance.now();
const pages = readFileSync('/proc/self/smaps_rollup', 'utf8').split('\n').filter((l) => /^(FilePmdMapped|AnonHugePages):/.test(l))
  .map((l) => l.replace(/\s+/g, ' ')).join(', ');
console.log(`${name} ${how}${flag === '--drop' ? ' (dropped from the page cache first)' : ''}: load ${((t1 - t0) / 1000).toFixed(2)} s, ` +
  `first forward (16 tokens) ${((t2 - t1) / 1000).toFixed(2)} s, one decode step ${(t3 - t2).toFixed(1)} ms; ${pages}`);
loaded.close();
