/**
 * `npm run bench` (tsx bench/cpu/run.ts): our CPU backend against llama.cpp on this machine, with the
 * peer and the limit measured in the same run. For each benchmark model (dense and MoE, f32 and
 * bf16, bench/cpu/models.ts): prefill of 512 tokens, decode of 128 after it, peak resident memory,
 * each engine in a child process of its own, the read bandwidth probed around every decode round.
 * Writes the table to bench/RESULTS.md (CPU section).
 *
 *   tsx bench/cpu/run.ts [--only NAME,…] [--threads N] [--repeats N] [--ours-env KEY=VALUE …] [--no-write]
 *
 * --ours-env sets an environment variable for our engine's child only (e.g. UV_THREADPOOL_SIZE=1, to
 * see what running every forward on one thread would give); the report's command line shows it.
 *
 * Weights go to .bench/weights/ and are reused across runs; our builds are cached in .bench/cache/.
 */
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { buildPlan } from '../../compiler/plan/build-plan.js';
import { planStats } from '../../compiler/plan/stats.js';
import { buildBandwidthProbe } from './bandwidth.js';
import { machineDescription, waitForQuiet } from './machine.js';
import { BENCH_MODELS, benchConfig } from './models.js';
import { RESULT_PREFIX, type EngineJob, type EngineResult } from './protocol.js';
import { bestDecode, prefillRate, renderTable, writeReport, type ModelRow } from './report.js';
import { dropFromPageCache } from './tools.js';
import { ensureWeights } from './weights.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, '..', '..');
const PROMPT_TOKENS = 512;
const DECODE_TOKENS = 128;

const { values: args } = parseArgs({
  options: {
    only: { type: 'string' },
    threads: { type: 'string', default: String(availableParallelism()) },
    repeats: { type: 'string', default: '3' },
    'ours-env': { type: 'string', multiple: true, default: [] },
    'no-write': { type: 'boolean', default: false },
  },
});
const threads = Number(args.threads);
const repeats = Number(args.repeats);
const only = args.only?.split(',');
const models = BENCH_MODELS.filter((m) => only === undefined || only.some((o) => m.name.includes(o)));
const log = (line: string) => process.stderr.write(`bench: ${line}\n`);

const benchDir = join(ROOT, '.bench');
mkdirSync(benchDir, { recursive: true });
const bandwidthExe = buildBandwidthProbe(join(benchDir, 'bin'));

/** Same ids for both engines: a fixed LCG over the vocabulary, skipping the three control tokens. */
function tokenIds(n: number, seed: number, vocab: number): number[] {
  let s = seed >>> 0;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return 3 + (s % (vocab - 3));
  });
}

const oursEnv = Object.fromEntries(args['ours-env'].map((kv) => {
  const eq = kv.indexOf('=');
  if (eq <= 0) throw new Error(`--ours-env ${kv}: expected KEY=VALUE`);
  return [kv.slice(0, eq), kv.slice(eq + 1)];
}));

function runEngine(script: string, job: EngineJob, extraEnv: Record<string, string> = {}): Promise<EngineResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(HERE, script), JSON.stringify(job)], {
      cwd: ROOT, env: { ...process.env, OMP_NUM_THREADS: String(job.threads), ...extraEnv }, stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    child.on('error', reject);
    child.on('close', (code) => {
      const line = out.split('\n').find((l) => l.startsWith(RESULT_PREFIX));
      if (code !== 0 || line === undefined) reject(new Error(`${script} exited with ${code}: ${out.slice(-2000)}`));
      else resolve(JSON.parse(line.slice(RESULT_PREFIX.length)) as EngineResult);
    });
  });
}

const started = performance.now();
const busy: number[] = [];
/** Other agents share this machine: start each child in a quiet moment when one comes within 90 s. */
const quiet = async () => busy.push(await waitForQuiet(90_000, log));

const rows: ModelRow[] = [];
for (const m of models) {
  const weights = await ensureWeights(join(benchDir, 'weights'), m, log);
  const config = benchConfig(m, weights.dir);
  const plan = buildPlan(config, { target: 'cpu', tp: 1, dtype: m.dtype, maxTokens: PROMPT_TOKENS });
  const stats = planStats(plan, PROMPT_TOKENS + DECODE_TOKENS / 2);
  const base = {
    threads, repeats, bandwidthExe,
    prompt: tokenIds(PROMPT_TOKENS, 7, config.vocab_size),
    decode: tokenIds(DECODE_TOKENS, 8, config.vocab_size),
  };
  // Each engine reads its checkpoint from disk, as after a reboot (report.ts says so under the table).
  dropFromPageCache(weights.safetensorsPath);
  await quiet();
  log(`${m.name}: ours`);
  const ours = await runEngine('engine-ours.ts', { ...base, path: weights.dir, cacheDir: join(benchDir, 'cache') }, oursEnv);
  dropFromPageCache(weights.ggufPath);
  await quiet();
  log(`${m.name}: llama.cpp`);
  const llama = await runEngine('engine-llamacpp.ts', { ...base, path: weights.ggufPath, kvType: m.dtype === 'f32' ? 'F32' : 'BF16' });
  const row: ModelRow = {
    model: m.name, kind: m.kind, dtype: m.dtype, paramsTotal: stats.params_total, paramsActive: stats.params_active,
    promptTokens: PROMPT_TOKENS, decodeTokens: DECODE_TOKENS, bytesPerToken: stats.decode.bytes_per_token_per_rank,
    weightBytes: weights.safetensorsBytes, kvBytes: plan.kv_cache.total_bytes_per_rank, ours, llama,
  };
  rows.push(row);
  const [o, l] = [bestDecode(ours, row), bestDecode(llama, row)];
  log(`${m.name}: prefill ${prefillRate(ours, PROMPT_TOKENS).toFixed(1)} vs ${prefillRate(llama, PROMPT_TOKENS).toFixed(1)} tok/s, ` +
    `decode ${o.rate.toFixed(1)} (${(100 * o.ofLimit).toFixed(0)}% of limit) vs ${l.rate.toFixed(1)} (${(100 * l.ofLimit).toFixed(0)}%) tok/s, peak ${(ours.peakBytes / 2 ** 20).toFixed(0)} vs ${(llama.peakBytes / 2 ** 20).toFixed(0)} MiB`);
}

const command = `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;
const table = renderTable({ date: new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC', machine: machineDescription(), command, threads, busy, rows });
process.stdout.write(`${table}\n`);
if (!args['no-write']) {
  const path = join(ROOT, 'bench', 'RESULTS.md');
  writeReport(path, table);
  log(`wrote ${relative(process.cwd(), path)}`);
}
log(`done in ${((performance.now() - started) / 1000).toFixed(0)} s`);
