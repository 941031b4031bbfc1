/**
 * What the runtime adds to a generated token outside the model's own forward: the same decode steps
 * of one small model through each layer of the runtime, in one process, arms alternating. µs a step,
 * median over the rounds:
 *   - forwardSync: the addon's ModelInstance on the JS thread (what the GPU decode benchmark times);
 *   - instance.forward: the same as a promise (the model's own thread, which settles it);
 *   - group.forward: a one-rank TpGroup (what loadModel's model holds), also a promise;
 *   - model.forward: loadModel's model, one token a call (its queue, checks, KV bookkeeping);
 *   - model.generate: greedy tokens from loadModel's generate() (the above plus the row's scan and
 *     the async generator).
 * Each arm's difference from forwardSync is what the runtime costs a token; on the H200 a 7B token
 * takes ~4.1 ms. The arms take turns step by step, each on its own model (its own KV cache). The model is tiny but has Mistral's vocabulary (the row of logits is the one part
 * of the host's work that grows with the model), so that its own forward is short and the runtime's
 * part shows.
 *
 *   tsx bench/cpu/step-overhead.ts [--steps N] [--rounds R] [--vocab V]
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { packageRoot } from '../../compiler/paths.js';
import { buildPlanLibrary } from '../../compiler/build/build.js';
import { normalizeParams } from '../../compiler/config/normalize.js';
import { buildPlan } from '../../compiler/plan/build-plan.js';
import { writeRandomWeights } from '../../compiler/weights/random.js';
import { rankWeightViews } from '../../runtime/checkpoint.js';
import { readCheckpoint } from '../../runtime/checkpoint-files.js';
import { loadModel } from '../../runtime/model.js';
import { loadNativeAddon } from '../../runtime/native-loader.js';
import { median } from '../median.js';

const { values: args } = parseArgs({
  options: { steps: { type: 'string', default: '200' }, rounds: { type: 'string', default: '9' }, vocab: { type: 'string', default: '32768' } },
});
const STEPS = Number(args.steps), ROUNDS = Number(args.rounds), VOCAB = Number(args.vocab);
const PROMPT = 8;

// One layer of minimal width: its forward is a few µs of products, the LM head's row aside.
const params = {
  dim: 32, n_layers: 1, head_dim: 16, hidden_dim: 64, n_heads: 2, n_kv_heads: 1, norm_eps: 1e-5,
  vocab_size: VOCAB, rope_theta: 1e6, max_seq_len: PROMPT + STEPS + 1,
};
const dir = join(packageRoot(), '.bench', 'step-overhead', `v${VOCAB}-s${STEPS}`);
const cacheDir = join(packageRoot(), '.bench', 'cache');
mkdirSync(dir, { recursive: true });
const config = normalizeParams(params, join(dir, 'params.json'), { name: 'step-overhead' });
await writeRandomWeights(config, dir, { seed: 5, dtype: 'bf16' });  // its own mark lets it replace its own file

// loadModel's models (one for forward(), one for generate(): each its own KV cache), threads 1; the
// addon's own instances below run with OMP_NUM_THREADS as loadModel set it.
const model = await loadModel(dir, { cacheDir, maxTokens: PROMPT, threads: 1 });
const generating = await loadModel(dir, { cacheDir, maxTokens: PROMPT, threads: 1 });
const plan = buildPlan(config, { target: 'cpu', tp: 1, dtype: 'bf16', maxTokens: PROMPT });
const built = await buildPlanLibrary(plan, { cacheDir });
const addon = loadNativeAddon();
const checkpoint = await readCheckpoint(dir);
const file = new addon.MappedFile(checkpoint.files[0]!.path);
const library = new addon.CompiledLibrary(built.library);
const open = () => new addon.ModelInstance(library, file, rankWeightViews(checkpoint, plan, 0), 0);
const syncInstance = open(), asyncInstance = open();
const group = new addon.TpGroup([open()], VOCAB, 0);
file.close();

const prompt = Int32Array.from({ length: PROMPT }, (_, i) => (i * 7919 + 13) % VOCAB);
const next = (i: number) => (i * 104729 + 7) % VOCAB;

/** Each arm: start a sequence (its prompt), then one decode step at a time. */
interface Arm { name: string; start: () => Promise<void>; step: (i: number) => Promise<void> }
let tokens: AsyncGenerator<number, void, void> | undefined;
const arms: Arm[] = [
  { name: 'forwardSync (addon, JS thread)', start: async () => void syncInstance.forwardSync(prompt, 0, false),
    step: async (i) => void syncInstance.forwardSync(Int32Array.of(next(i)), PROMPT + i, false) },
  { name: 'instance.forward (addon, promise)', start: async () => void await asyncInstance.forward(prompt, 0, false),
    step: async (i) => void await asyncInstance.forward(Int32Array.of(next(i)), PROMPT + i, false) },
  { name: 'group.forward (one-rank TpGroup)', start: async () => void await group.forward(prompt, 0, false),
    step: async (i) => void await group.forward(Int32Array.of(next(i)), PROMPT + i, false) },
  { name: 'model.forward (loadModel)', start: async () => void await model.forward([...prompt], 0, false),
    step: async (i) => void await model.forward([next(i)], PROMPT + i, false) },
  { name: 'model.generate (greedy)', start: async () => {
    await tokens?.return();
    tokens = generating.generate([...prompt], { maxTokens: STEPS + 1 });
    await tokens.next();  // the prompt, and the first token from its logits
  }, step: async () => {
    if ((await tokens!.next()).done) throw new Error('generate stopped early');
  } },
];

// The arms take turns step by step (their order rotating), so that this machine's drift reaches all
// alike; µs of each call, median over every step of every round.
const times = arms.map(() => [] as number[]);
for (let round = 0; round <= ROUNDS; round++) {
  for (const arm of arms) await arm.start();
  for (let i = 0; i < STEPS; i++) {
    for (let k = 0; k < arms.length; k++) {
      const a = (i + k) % arms.length;
      const started = performance.now();
      await arms[a]!.step(i);
      if (round > 0) times[a]!.push((performance.now() - started) * 1000);  // round 0 warms up
    }
  }
}
const quantile = (xs: number[], q: number) => [...xs].sort((x, y) => x - y)[Math.floor(q * (xs.length - 1))]!;
const floor = median(times[0]!);
console.log(`decode steps of a 1-layer model (dim 32) with a vocabulary of ${VOCAB}, bf16, 1 thread: µs a step, the arms taking turns, ${ROUNDS} rounds × ${STEPS} steps`);
console.log('| path | median µs a step | 10th-90th percentile | over forwardSync |');
console.log('|---|---|---|---|');
for (const [a, arm] of arms.entries()) {
  const t = times[a]!;
  const m = median(t);
  console.log(`| ${arm.name} | ${m.toFixed(1)} | ${quantile(t, 0.1).toFixed(1)}-${quantile(t, 0.9).toFixed(1)} | ${a === 0 ? '' : `+${(m - floor).toFixed(1)}`} |`);
}
await tokens?.return();
syncInstance.close();
asyncInstance.close();
group.close();
model.close();
generating.close();
