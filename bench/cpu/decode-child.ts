/**
 * Child of bench/cpu/env-ab.ts and outside-products.ts: loads one benchmark model with weights 'map' or 'copy', prefills the
 * prompt, then for every line "N" on stdin decodes the next N tokens and answers with the
 * milliseconds per token. Idle between requests, so the other child has the cores to itself.
 */
import { createInterface } from 'node:readline';
import { loadModel } from '../../runtime/model.js';

const [dir, how, cacheDir] = process.argv.slice(2) as [string, 'map' | 'copy', string];
const PROMPT = 512;
const started = performance.now();
const model = await loadModel(dir, { weights: how, cacheDir, maxTokens: PROMPT, maxSeqLen: 1024 });
const loadSeconds = (performance.now() - started) / 1000;
await model.forward(Array.from({ length: PROMPT }, (_, i) => (i * 7919 + 13) % 32000), 0, false);
let pos = PROMPT;
console.log(JSON.stringify({ ready: true, loadSeconds }));
for await (const line of createInterface({ input: process.stdin })) {
  const steps = Number(line);
  const begin = performance.now();
  for (let i = 0; i < steps; i++, pos++) await model.forward([(pos * 104729 + 7) % 32000], pos, false);
  console.log(JSON.stringify({ msPerToken: (performance.now() - begin) / steps }));
}
model.close();
