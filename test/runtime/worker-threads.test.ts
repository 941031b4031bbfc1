/**
 * The runtime in worker threads (node:worker_threads) that are terminated while a forward runs:
 * worker.terminate() ends the worker's JavaScript at once and frees its ArrayBuffers, while the
 * model's own thread is still inside the library, writing logits. The process must go on: no
 * crash, no abort (an error that can no longer be thrown into the worker's JS), no write into freed
 * memory (under test/asan/run.sh, ASan would end the run). The addon used to abort here.
 *
 * Each case runs in a child process of its own (a crash must fail the test, not end vitest's
 * worker): it starts workers that each load the fake model whose forward sleeps 100 ms, start a
 * forward and are terminated while it runs; then a model on the child's main thread still gives
 * the fake model's logits.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nativeAddonPath } from '../../runtime/native-loader.js';
import { buildFakeModel, type FakeCheckpoint, referenceLogits, VOCAB, writeFakeCheckpoint } from './fake-model.js';

let dir: string;
let checkpoint: FakeCheckpoint;
let slowLibrary: string;

// The worker: loads the model, starts a forward (100 ms in the library) and says so; the parent then
// terminates it mid-forward. kind "TpGroup": through a one-rank TpGroup (what loadModel's model holds).
const WORKER = `
import { createRequire } from 'node:module';
import { parentPort, workerData } from 'node:worker_threads';
const addon = createRequire(import.meta.url)(workerData.addon);
const file = new addon.MappedFile(workerData.checkpoint);
const model = new addon.ModelInstance(new addon.CompiledLibrary(workerData.library), file, workerData.weights, 0);
file.close();
const target = workerData.kind === 'TpGroup' ? new addon.TpGroup([model], workerData.vocab, 0) : model;
target.forward(Int32Array.of(1, 2, 3), 0, true).catch(() => {});
parentPort.postMessage('in flight');
`;

// The child's main script: ROUNDS workers terminated mid-forward (after 0-4 ms more, so that some are
// ended while the library runs and some as it returns), then a forward on the main thread.
const MAIN = `
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
const data = JSON.parse(process.argv[2]);
for (let i = 0; i < data.rounds; i++) {
  const worker = new Worker(new URL('./worker.mjs', import.meta.url), { workerData: data });
  await new Promise((resolve, reject) => { worker.once('message', resolve); worker.once('error', reject); });
  await new Promise((resolve) => setTimeout(resolve, i % 5));
  await worker.terminate();
}
const addon = createRequire(import.meta.url)(data.addon);
const file = new addon.MappedFile(data.checkpoint);
const model = new addon.ModelInstance(new addon.CompiledLibrary(data.library), file, data.weights, 0);
file.close();
const logits = await model.forward(Int32Array.of(1, 2, 3), 0, true);
model.close();
console.log(JSON.stringify({ terminated: data.rounds, logits: Array.from(logits) }));
`;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mc-worker-threads-'));
  checkpoint = writeFakeCheckpoint(dir);
  slowLibrary = await buildFakeModel(dir, ['FAKE_FORWARD_SLEEP_MS=100']);
  writeFileSync(join(dir, 'worker.mjs'), WORKER);
  writeFileSync(join(dir, 'main.mjs'), MAIN);
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('worker threads terminated while a forward runs', () => {
  it.each(['ModelInstance', 'TpGroup'])('%s: the process goes on, and a model on its main thread still gives the right logits', async (kind) => {
    const data = { addon: nativeAddonPath(), library: slowLibrary, checkpoint: checkpoint.path, weights: checkpoint.weights, kind, vocab: VOCAB, rounds: 10 };
    const run = await execa(process.execPath, [join(dir, 'main.mjs'), JSON.stringify(data)], { reject: false, all: true, timeout: 60_000 });
    expect(run.exitCode, String(run.all)).toBe(0);
    const result = JSON.parse(run.stdout.trim().split('\n').at(-1)!) as { terminated: number; logits: number[] };
    expect(result.terminated).toBe(10);
    expect(result.logits).toEqual(referenceLogits([], [1, 2, 3]).flat());
  }, 120_000);
});
