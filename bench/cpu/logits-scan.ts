/**
 * What generate() does with each decode step's row of logits before it picks a token (finite?, then
 * the greedy token): the plain JavaScript passes it ran until 2026-11-27 (firstNonFinite, then
 * argmax) against the runtime addon's scanLogits (runtime/addon/src/logits_scan.cpp), on the same
 * random rows in one process, for Mistral's vocabularies (32000, 32768, 131072). µs a row, median of
 * the repetitions; the time is the JS thread's, after every GPU (or CPU) decode step.
 *
 *   tsx bench/cpu/logits-scan.ts [--repeats R]
 */
import { parseArgs } from 'node:util';
import { loadNativeAddon } from '../../runtime/native-loader.js';
import { median } from '../median.js';
import { mulberry32 } from '../../test/reference/random.js';

const { values: args } = parseArgs({ options: { repeats: { type: 'string', default: '9' } } });
const REPEATS = Number(args.repeats);
const ROWS = 2000;

/** The JS passes generate() ran: the first non-finite value, then the first largest. */
function scanInJs(row: Float32Array): number {
  for (let i = 0; i < row.length; i++) if (!Number.isFinite(row[i]!)) return -i - 1;
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

const { scanLogits } = loadNativeAddon();
const random = mulberry32(3);
console.log(`one row of logits a generated token: µs a row, median of ${REPEATS} × ${ROWS} rows (the same rows for both)`);
console.log('| vocabulary | JavaScript (firstNonFinite + argmax) | addon scanLogits | JS / addon |');
console.log('|---|---|---|---|');
for (const n of [32000, 32768, 131072]) {
  const rows = Array.from({ length: 8 }, () => Float32Array.from({ length: n }, () => random() * 20 - 10));
  const time = (scan: (row: Float32Array) => number): number => {
    const runs: number[] = [];
    let sink = 0;
    for (let r = 0; r <= REPEATS; r++) {
      const started = performance.now();
      for (let i = 0; i < ROWS; i++) sink += scan(rows[i % rows.length]!);
      if (r > 0) runs.push(((performance.now() - started) / ROWS) * 1000);  // the first is warm-up
    }
    if (sink < 0) throw new Error('a random row held a non-finite value');
    return median(runs);
  };
  for (const row of rows) if (scanInJs(row) !== scanLogits(row)) throw new Error(`the two scans disagree on a row of ${n}`);
  const js = time(scanInJs), native = time(scanLogits);
  console.log(`| ${n} | ${js.toFixed(1)} | ${native.toFixed(1)} | ${(js / native).toFixed(1)}× |`);
}
