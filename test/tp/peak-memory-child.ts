// Child process of tensor-parallel.test.ts: loads a model at --tp N, runs a prompt, prints VmHWM.
import { readFileSync } from 'node:fs';
import { loadModel } from '../../runtime/model.js';

const [dir, tp, cacheDir] = process.argv.slice(2) as [string, string, string];
const model = await loadModel(dir, { tp: Number(tp) as 1 | 2 | 4, cacheDir, maxTokens: 16 });
await model.logits(Array.from({ length: 16 }, (_, i) => i * 3));
const peak = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))![1];
model.close();
process.stdout.write(`${Number(peak) * 1024}\n`);
