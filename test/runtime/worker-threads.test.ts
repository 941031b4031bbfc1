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
 * the fake model's logits. A third case terminates workers that run a compiled model's forwards
 * and KV snapshot copies in a loop, at whichever moment; a fourth, the two ranks of a
 * multi-process group (DistGroup: its forward a libuv worker that waits on sockets) on two worker
 * threads, one terminated at whichever moment, the other then failing and terminated too.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildPlanLibrary } from '../../compiler/build/build.js';
import { loadModelConfig } from '../../compiler/config/load.js';
import { buildPlan } from '../../compiler/plan/build-plan.js';
import { rankWeightViews } from '../../runtime/checkpoint.js';
import { readCheckpoint } from '../../runtime/checkpoint-files.js';
import { nativeAddonPath } from '../../runtime/native-loader.js';
import { writeModelDir } from '../e2e/helpers.js';
import { buildFakeModel, type FakeCheckpoint, referenceLogits, VOCAB, writeFakeCheckpoint } from './fake-model.js';

let dir: string;
let checkpoint: FakeCheckpoint;
let slowLibrary: string;
let compiled: Record<string, unknown>;
let distributed: Record<string, unknown>;

// The worker: loads the model, starts a forward (100 ms in the library) and says so; the parent then
// terminates it mid-forward. kind "TpGroup": through a one-rank TpGroup (what loadModel's model holds).
const WORKER = `
import { createRequire } from 'node:module';
import { parentPort, workerData } from 'node:worker_threads';
const addon = createRequire(import.meta.url)(workerData.addon);
const file = new addon.MappedFile(workerData.checkpoint);
const model = new addon.ModelInstance(new addon.CompiledLibrary(workerData.library), file, workerData.weights, 0);
file.close();
const target = workerData.kind === 'ModelInstance' ? model : new addon.TpGroup([model], workerData.vocab, 0);
if (workerData.kind === 'kv') {
  // A compiled model's forwards and KV snapshots in a loop, said once one round has passed (the
  // rejections of a round would end the worker with an error); terminated at whichever is running.
  for (let round = 0; ; round++) {
    const logits = await target.forward(Int32Array.of(1, 2, 3, 4), 0, false);
    if (!logits.every(Number.isFinite)) throw new Error('logits not finite');
    await target.loadKv(await target.saveKv(4), 4);
    if (round === 0) parentPort.postMessage('in flight');
  }
}
target.forward(Int32Array.of(1, 2, 3), 0, true).catch(() => {});
parentPort.postMessage('in flight');
`;

// One rank of a TP 2 DistGroup over loopback: joins the other, then forwards and KV snapshots in a
// loop as the kv worker above. Once its peer is gone its calls reject and it ends with that error.
const DIST_WORKER = `
import { createRequire } from 'node:module';
import { parentPort, workerData } from 'node:worker_threads';
const addon = createRequire(import.meta.url)(workerData.addon);
const file = new addon.MappedFile(workerData.checkpoint);
const model = new addon.ModelInstance(new addon.CompiledLibrary(workerData.library), file, workerData.weights[workerData.rank], workerData.rank);
file.close();
const group = new addon.DistGroup(model, workerData.vocab, 1, workerData.rank, 2);
await group.join('127.0.0.1', workerData.port, 10000, 'worker-threads');
for (let round = 0; ; round++) {
  const logits = await group.forward(Int32Array.of(1, 2, 3, 4), 0, false);
  if (!logits.every(Number.isFinite)) throw new Error('logits not finite');
  await group.loadKv(await group.saveKv(4), 4);
  if (round === 0) parentPort.postMessage('in flight');
}
`;

// The child's main script: ROUNDS rounds of a worker (or, with data.dist, the two rank workers of a
// group on a fresh port) terminated mid-forward, after 0-4 ms more, so that some are ended while
// the library runs and some as it returns (the ranks one after the other, the first alternating;
// the second by then failing, or already ended by its rejection); then a forward on the main thread.
const MAIN = `
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { Worker } from 'node:worker_threads';
const data = JSON.parse(process.argv[2]);
const freePort = () => new Promise((resolve) => { const s = createServer().listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); }); });
const inFlight = (w) => new Promise((resolve, reject) => { w.once('message', resolve); w.once('error', reject); });
for (let i = 0; i < data.rounds; i++) {
  const port = data.dist ? await freePort() : 0;
  const workers = data.dist
    ? [0, 1].map((rank) => new Worker(new URL('./dist-worker.mjs', import.meta.url), { workerData: { ...data.worker, rank, port } }))
    : [new Worker(new URL('./worker.mjs', import.meta.url), { workerData: data.worker ?? data })];
  await Promise.all(workers.map(inFlight));
  for (const w of workers) w.on('error', () => {});  // a rank's rejection once its peer is gone
  await new Promise((resolve) => setTimeout(resolve, i % 5));
  for (let k = 0; k < workers.length; k++) await workers[(i + k) % workers.length].terminate();
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
  // A compiled tiny model (the fake one has no KV snapshots): its library, file and weight views.
  const model = await writeModelDir(dir, 'tiny-dense', { shipped: 'tiny-dense' }, { seed: 3, dtype: 'bf16' });
  const plan = buildPlan(loadModelConfig(model.dir), { target: 'cpu', dtype: 'bf16', tp: 1, maxTokens: 4 });
  const built = await buildPlanLibrary(plan, { cacheDir: join(dir, 'cache') });
  compiled = { addon: nativeAddonPath(), library: built.library, checkpoint: model.safetensorsPath,
    weights: rankWeightViews(await readCheckpoint(model.dir), plan, 0), kind: 'kv', vocab: model.config.vocab_size };
  // Its TP 2 library, and each rank's weight views, for the DistGroup case.
  const tp2 = buildPlan(loadModelConfig(model.dir), { target: 'cpu', dtype: 'bf16', tp: 2, maxTokens: 4 });
  const checkpointTp2 = await readCheckpoint(model.dir);
  distributed = { addon: nativeAddonPath(), library: (await buildPlanLibrary(tp2, { cacheDir: join(dir, 'cache') })).library,
    checkpoint: model.safetensorsPath, weights: [0, 1].map((rank) => rankWeightViews(checkpointTp2, tp2, rank)), vocab: model.config.vocab_size };
  writeFileSync(join(dir, 'worker.mjs'), WORKER);
  writeFileSync(join(dir, 'main.mjs'), MAIN);
  writeFileSync(join(dir, 'dist-worker.mjs'), DIST_WORKER);
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

  it('a compiled model\'s forwards and KV snapshots (saveKv, loadKv) in a loop: the process goes on', async () => {
    const data = { addon: nativeAddonPath(), library: slowLibrary, checkpoint: checkpoint.path, weights: checkpoint.weights, rounds: 20, worker: compiled };
    const run = await execa(process.execPath, [join(dir, 'main.mjs'), JSON.stringify(data)], { reject: false, all: true, timeout: 60_000 });
    expect(run.exitCode, String(run.all)).toBe(0);
    expect((JSON.parse(run.stdout.trim().split('\n').at(-1)!) as { terminated: number }).terminated).toBe(20);
  }, 120_000);

  it('the two ranks of a DistGroup (TP 2 over loopback) on worker threads, terminated in turn: the process goes on', async () => {
    const data = { addon: nativeAddonPath(), library: slowLibrary, checkpoint: checkpoint.path, weights: checkpoint.weights, rounds: 8, worker: distributed, dist: true };
    const run = await execa(process.execPath, [join(dir, 'main.mjs'), JSON.stringify(data)], { reject: false, all: true, timeout: 90_000 });
    expect(run.exitCode, String(run.all)).toBe(0);
    const result = JSON.parse(run.stdout.trim().split('\n').at(-1)!) as { terminated: number; logits: number[] };
    expect(result.terminated).toBe(data.rounds);
    expect(result.logits).toEqual(referenceLogits([], [1, 2, 3]).flat());
  }, 120_000);
});
