/**
 * One decode step per kernel, under Nsight Compute: where Mistral-7B's step loses its ~1 ms against
 * the bandwidth limit (bench/RESULTS.md run 4). Writes profile.md (per kernel over one whole step:
 * count, µs, DRAM bytes, GB/s, grid), profile.json and ncu's raw CSV (ncu.csv) under --out.
 * With --prefill P, one prefill of P tokens instead (the child prefills P tokens at position 0
 * twice and every launch is profiled; the second call is reported): where a short prefill loses its
 * time against its weight-read floor (bench/RESULTS.md runs 5-10 and 12).
 *
 * The parent resolves the library (prebuilt or built) and the synthetic weights, runs the child once
 * without the profiler (the real ms per step), then under
 *   ncu --clock-control none --graph-profiling node --launch-skip S --launch-count C --csv --metrics …
 * The child (--child) loads the model as decode.ts does (views into the synthetic pool), prefills
 * 128 tokens, then decodes --steps one-token steps (the first captures the CUDA graph, every later
 * one replays it). S skips the prefill and the first steps, C covers about 3 steps (estimated from
 * the plan; the true kernels per step are the period of the profiled names, printed).
 *
 * With Node:  npx tsx bench/gpu/profile.ts [--case mistral-7b-v0.1] [--out DIR] [--work DIR] [--prebuilt manifest.json]
 *                                          [--ncu PATH] [--skip S] [--count C] [--steps 30] [--bandwidth-gbs 3000]
 *                                          [--prefill P]
 * On the GPU machine without Node, bundled like check.ts (bench/RESULTS.md "Command there"), from the repository root:
 *   here:   npx esbuild bench/gpu/profile.ts --bundle --platform=node --format=esm --target=node20 --outfile=.devtools/profile.mjs \
 *             "--banner:js=import { createRequire as __mcCreateRequire } from 'module'; const require = __mcCreateRequire(import.meta.url);"
 *   there:  xz -dc .devtools/node.xz > /tmp/node && chmod +x /tmp/node
 *           /tmp/node .devtools/profile.mjs --prebuilt .devtools/prebuilt/manifest.json --out $OUT
 * The bundle finds configs/ and runtime/addon/build/Release/mc_runtime.node through the package.json
 * above it, and starts its child as `<this node> .devtools/profile.mjs --child`.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import type { Plan } from '../../compiler/plan/types.js';
import { mulberry32, randomTokens } from '../../test/reference/random.js';
import { decodePlan, selectDecodeCases, type DecodeCase } from './cases.js';
import { median } from '../median.js';
import { openSynthetic, weightBytesPerToken, weightBytesRead, writeSyntheticWeights } from './decode.js';
import { gpuInfo, memoryMiB } from './device.js';
import { libraryFor, readManifest } from './libraries.js';
import { findStep, groupByKernel, NCU_METRICS, parseNcuCsv, type KernelLaunch } from './ncu.js';

const { values } = parseArgs({
  options: {
    child: { type: 'boolean', default: false },
    case: { type: 'string', default: 'mistral-7b-v0.1' },
    'gpu-mib': { type: 'string' },  // set by the parent for its child: the cases' layer counts depend on it
    out: { type: 'string', default: '/tmp/mc-gpu-profile/out' },
    work: { type: 'string', default: '/tmp/mc-gpu-check' },
    prebuilt: { type: 'string' },
    ncu: { type: 'string' },
    skip: { type: 'string' },
    count: { type: 'string' },
    steps: { type: 'string', default: '30' },
    'bandwidth-gbs': { type: 'string', default: '3000' },
    timeout: { type: 'string', default: '540' },
    prefill: { type: 'string' },  // tokens: profile one prefill of this many instead of a decode step
    // set by the parent for its child
    library: { type: 'string' },
    pool: { type: 'string' },
  },
});
const steps = Number(values.steps);
const prefillTokens = values.prefill === undefined ? null : Number(values.prefill);
if (prefillTokens !== null && !(Number.isInteger(prefillTokens) && prefillTokens >= 2)) throw new Error(`--prefill: ${values.prefill} is not a whole number of tokens >= 2`);
/** Steps left out of the unprofiled timing: the capture of the graph and its first replay. */
const STEADY_AFTER = 2;

function theCase(gpuMiB = values['gpu-mib'] === undefined ? undefined : Number(values['gpu-mib'])): DecodeCase {
  const cases = selectDecodeCases(values.case, gpuMiB);
  if (cases.length !== 1) throw new Error(`--case: name one config (got ${values.case})`);
  return cases[0]!;
}

interface ChildReport { key: string; prefillMs: number; stepMs: number[] }

/**
 * The profiled program: prefill, then `steps` decode steps, each timed; one JSON line on stdout.
 * With --prefill P: two prefills of the same P tokens at position 0 (stepMs: the second's time).
 */
function child(): void {
  const c = theCase();
  const plan = decodePlan(c);
  const model = openSynthetic(plan, values.library!, values.pool!);
  try {
    if (prefillTokens !== null) {
      const ids = Int32Array.from(randomTokens(mulberry32(7), prefillTokens, plan.model.vocab_size));
      let started = performance.now();
      model.forwardSync(ids, 0, false);
      const report: ChildReport = { key: plan.key, prefillMs: performance.now() - started, stepMs: [] };
      started = performance.now();
      model.forwardSync(ids, 0, false);  // position 0 starts the sequence over
      report.stepMs.push(performance.now() - started);
      console.log(JSON.stringify({ child: report }));
      return;
    }
    const tokens = randomTokens(mulberry32(7), c.prompt + steps, plan.model.vocab_size);
    let started = performance.now();
    model.forwardSync(Int32Array.from(tokens.slice(0, c.prompt)), 0, false);
    const report: ChildReport = { key: plan.key, prefillMs: performance.now() - started, stepMs: [] };
    for (let pos = c.prompt; pos < c.prompt + steps; pos++) {
      started = performance.now();
      model.forwardSync(Int32Array.of(tokens[pos]!), pos, false);
      report.stepMs.push(performance.now() - started);
    }
    console.log(JSON.stringify({ child: report }));
  } finally {
    model.close();
  }
}

/** ncu on PATH, else the newest /opt/nvidia/nsight-compute/<version>/ncu, else the CUDA toolkit's. */
function findNcu(): string {
  if (values.ncu !== undefined) return values.ncu;
  const onPath = (process.env.PATH ?? '').split(':').filter((d) => d !== '').map((d) => join(d, 'ncu'));
  const opt = '/opt/nvidia/nsight-compute';
  const versions = existsSync(opt) ? readdirSync(opt).sort((a, b) => b.localeCompare(a, 'en', { numeric: true })).map((v) => join(opt, v, 'ncu')) : [];
  const found = [...onPath, ...versions, '/usr/local/cuda/bin/ncu'].find((p) => existsSync(p));
  if (found === undefined) throw new Error('ncu not found on PATH, in /opt/nvidia/nsight-compute/*/ or /usr/local/cuda/bin; pass --ncu PATH');
  return found;
}

/**
 * Kernel launches of one decode step as the plan suggests: one per kernel node, plus the split-K
 * combine that each layer's decode attention launches after it (templates/cuda/attention_gqa_window).
 * Only an estimate for --launch-skip/--launch-count: the report counts the real ones.
 */
function launchesPerStepEstimate(plan: Plan): number {
  const nodes = plan.prologue.length + plan.epilogue.length + plan.layers.reduce((n, l) => n + l.kernels.length, 0);
  return nodes + plan.layers.length;
}

/** The first "Error: …" line of a failed child's output, else its last lines. */
function firstError(output: string): string {
  const lines = output.split('\n');
  return lines.find((l) => /^\w*Error: /.test(l)) ?? lines.slice(-4).join(' | ');
}

const us = (ns: number) => (ns / 1e3).toFixed(1);
const mb = (bytes: number) => (bytes / 1e6).toFixed(1);

function report(c: DecodeCase, plan: Plan, launches: KernelLaunch[], meta: { device: string; ncuVersion: string; command: string; skip: number; count: number; estimate: number; plain: ChildReport | null }): { md: string; json: unknown } {
  const what = prefillTokens === null ? 'decode step' : `prefill of ${prefillTokens} tokens`;
  const found = findStep(launches);
  if (found === null) throw new Error(`no whole ${what} twice among the ${launches.length} profiled kernels (estimated ${meta.estimate} per step); pass a larger --count`);
  // A prefill: the second of the child's two calls (the first also picks tiles and warms the caches).
  const step = prefillTokens === null || found.start + 2 * found.length > launches.length ? found : { start: found.start + found.length, length: found.length };
  const one = launches.slice(step.start, step.start + step.length);
  const groups = groupByKernel(one);
  const stepNs = one.reduce((s, k) => s + k.durationNs, 0);
  const read = one.reduce((s, k) => s + k.dramReadBytes, 0);
  const written = one.reduce((s, k) => s + k.dramWriteBytes, 0);
  const everyStep: number[] = [];
  for (let s = found.start; s + step.length <= launches.length; s += step.length) {
    everyStep.push(launches.slice(s, s + step.length).reduce((sum, k) => sum + k.durationNs, 0) / 1e6);
  }
  // A decode step reads every weight once; a prefill of P tokens its weights at least once (weightBytesRead).
  const weightBytes = prefillTokens === null ? weightBytesPerToken(plan) : weightBytesRead(plan, prefillTokens);
  const bandwidth = Number(values['bandwidth-gbs']) * 1e9;
  const limitMs = (weightBytes / bandwidth) * 1e3;
  const plainMs = meta.plain === null ? NaN : prefillTokens === null ? median(meta.plain.stepMs.slice(STEADY_AFTER)) : meta.plain.stepMs[0]!;

  const md: string[] = [];
  md.push(`# One ${what} of ${c.label} (${plan.key}), per kernel`, '');
  md.push(`${new Date().toISOString().slice(0, 10)}, ${meta.device}, ${meta.ncuVersion}. Command: \`${meta.command}\`.`, '');
  md.push((prefillTokens === null
    ? `The child prefilled ${c.prompt} tokens, then decoded ${steps} steps (CUDA graph replays after the first). `
    : `The child prefilled the same ${prefillTokens} random tokens at position 0 twice (no graph: each kernel launched from the host). `) +
    `Profiled launches ${meta.skip}..${meta.skip + meta.count - 1}; ` +
    `**one ${what} = ${step.length} kernels** (the period of the profiled kernel names; the plan's estimate was ${meta.estimate}), taken from launch ${meta.skip + step.start}.`, '');
  md.push('| kernel | count | total µs | mean µs | share | DRAM MB read | DRAM MB written | GB/s (read + write) | grid | block |', '|---|---|---|---|---|---|---|---|---|---|');
  for (const g of groups) {
    const gbs = (g.dramReadBytes + g.dramWriteBytes) / g.totalNs;  // bytes per ns = GB/s
    md.push(`| ${g.short} | ${g.count} | ${us(g.totalNs)} | ${us(g.totalNs / g.count)} | ${(100 * g.totalNs / stepNs).toFixed(1)}% | ${mb(g.dramReadBytes)} | ${mb(g.dramWriteBytes)} | ${gbs.toFixed(0)} | ${g.grids.join(', ')} | ${g.blocks.join(', ')} |`);
  }
  md.push(`| **step** | ${one.length} | ${us(stepNs)} | ${us(stepNs / one.length)} | 100% | ${mb(read)} | ${mb(written)} | ${((read + written) / stepNs).toFixed(0)} | | |`, '');
  md.push(`- Sum of kernel durations: **${(stepNs / 1e6).toFixed(3)} ms** per ${what} (each whole one in the window: ${everyStep.map((x) => x.toFixed(3)).join(', ')} ms).`);
  md.push(`- Bandwidth limit: ${(weightBytes / 1e9).toFixed(2)} GB of weights ${prefillTokens === null ? 'per token' : 'read at least once'} / ${values['bandwidth-gbs']} GB/s = **${limitMs.toFixed(3)} ms**; the kernels alone take ${(stepNs / 1e6 / limitMs).toFixed(3)}× that. DRAM read in the ${what}: ${(read / 1e9).toFixed(2)} GB.`);
  md.push(Number.isNaN(plainMs)
    ? `- Unprofiled time: n/a (the run without ncu failed).`
    : `- Unprofiled, the same child without ncu: **${plainMs.toFixed(3)} ms** per ${what} (${prefillTokens === null ? `median of steps ${STEADY_AFTER + 1}-${steps}` : 'the second call, host clock'}), so ${(plainMs - stepNs / 1e6).toFixed(3)} ms lie outside the kernels' own durations (launch gaps and tails between kernels, minus the overlap PDL gives).`);
  md.push('- ncu runs each kernel alone (serialized, replayed per metric pass, caches flushed before each pass: --cache-control all) at unlocked clocks (--clock-control none): its durations have no overlap between neighbours and no L2 reuse across kernels.');
  return {
    md: md.join('\n') + '\n',
    json: { key: plan.key, prefillTokens, device: meta.device, ncu: meta.ncuVersion, command: meta.command, skip: meta.skip, count: meta.count, estimate: meta.estimate,
      step: { start: step.start, kernels: step.length, ms: stepNs / 1e6, dramReadBytes: read, dramWriteBytes: written, everyStepMs: everyStep },
      weightBytesPerToken: weightBytes, limitMs, unprofiledMs: Number.isNaN(plainMs) ? null : plainMs, groups, launches },
  };
}

async function parent(): Promise<void> {
  const out = values.out!;
  const work = values.work!;
  mkdirSync(out, { recursive: true });
  mkdirSync(work, { recursive: true });
  const log = (line: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${line}`);
  const device = await gpuInfo();
  const c = theCase(memoryMiB(device));
  const plan = decodePlan(c);
  const { library, prebuilt } = await libraryFor(plan, { cacheDir: join(work, 'cache'), archs: device.archs, prebuilt: readManifest(values.prebuilt) });
  log(`${plan.key}: ${prebuilt ? 'prebuilt' : 'built'} library ${library}`);
  const pool = join(work, 'synthetic-bf16.bin');
  writeSyntheticWeights(pool);

  // The same script as the child: under tsx, execArgv carries its loader; bundled, it is empty.
  const childCommand = [...process.execArgv, fileURLToPath(import.meta.url), '--child', '--case', c.config, '--library', library, '--pool', pool, '--steps', String(steps), '--gpu-mib', String(memoryMiB(device)),
    ...(prefillTokens === null ? [] : ['--prefill', String(prefillTokens)])];
  const timeout = Number(values.timeout) * 1000;
  const plainRun = await execa(process.execPath, childCommand, { reject: false, all: true, timeout });
  const plainLine = String(plainRun.all ?? '').split('\n').find((l) => l.startsWith('{"child"'));
  const plain = plainLine === undefined ? null : (JSON.parse(plainLine) as { child: ChildReport }).child;
  if (plain === null) log(`the run without ncu failed (exit ${plainRun.exitCode ?? 'none'}): ${firstError(String(plainRun.all ?? plainRun.shortMessage))}`);
  else if (prefillTokens !== null) log(`without ncu: prefill ${prefillTokens} tokens ${plain.prefillMs.toFixed(1)} ms, then ${plain.stepMs[0]!.toFixed(2)} ms`);
  else log(`without ncu: prefill ${c.prompt} tokens ${plain.prefillMs.toFixed(1)} ms, decode ${median(plain.stepMs.slice(STEADY_AFTER)).toFixed(3)} ms/step`);

  const ncu = findNcu();
  const ncuVersion = (await execa(ncu, ['--version'], { reject: false })).stdout.split('\n').filter((l) => l.trim() !== '').pop() ?? 'ncu (version unknown)';
  const estimate = launchesPerStepEstimate(plan);
  // Decode: past the prefill (about one step's kernels) and the capture and first replays; then about
  // 3 steps. Prefill: every launch of both calls (a GEMM may launch 1 or 2 kernels: no good estimate).
  const skip = values.skip !== undefined ? Number(values.skip) : prefillTokens === null ? 4 * estimate : 0;
  const count = values.count !== undefined ? Number(values.count) : prefillTokens === null ? 3 * estimate : 1_000_000;
  if (prefillTokens === null && (skip + count) / estimate > steps - 1) throw new Error(`--skip ${skip} + --count ${count} reach past ${steps} steps of ~${estimate} kernels; pass a larger --steps`);
  const csvPath = join(out, 'ncu.csv');
  rmSync(csvPath, { force: true });
  const ncuArgs = ['-f', '--clock-control', 'none', '--graph-profiling', 'node', '--launch-skip', String(skip), '--launch-count', String(count),
    '--metrics', Object.values(NCU_METRICS).join(','), '--csv', '--page', 'details', '--print-units', 'base', '--print-kernel-base', 'demangled',
    '--log-file', csvPath];
  const command = [ncu, ...ncuArgs, process.execPath, ...childCommand].join(' ');
  log(`profiling ${count} kernels after ${skip} (~${estimate} per step): ${command}`);
  const started = performance.now();
  const run = await execa(ncu, [...ncuArgs, process.execPath, ...childCommand], { reject: false, all: true, timeout });
  writeFileSync(join(out, 'ncu-output.log'), String(run.all ?? ''));
  log(`ncu finished in ${((performance.now() - started) / 1000).toFixed(0)} s, exit ${run.exitCode ?? 'none'}${run.timedOut ? ' (timed out)' : ''}`);
  // --log-file holds ncu's own lines and the CSV; stdout is the child's (and ncu's, where --log-file is ignored).
  const csv = existsSync(csvPath) ? readFileSync(csvPath, 'utf8') : '';
  const launches = parseNcuCsv(csv).length > 0 ? parseNcuCsv(csv) : parseNcuCsv(String(run.all ?? ''));
  if (launches.length === 0) {
    const problems = `${csv}\n${String(run.all ?? run.shortMessage)}`.split('\n').filter((l) => /==ERROR==|==WARNING==|ERR_|rror/.test(l)).slice(0, 8);
    throw new Error(`ncu reported no kernels (exit ${run.exitCode ?? 'none'}): ${problems.join(' | ') || 'see ncu-output.log'}`);
  }
  const { md, json } = report(c, plan, launches, { device: `${device.name} (driver ${device.driver})`, ncuVersion, command, skip, count, estimate, plain });
  writeFileSync(join(out, 'profile.md'), md);
  writeFileSync(join(out, 'profile.json'), JSON.stringify(json, null, 2) + '\n');
  console.log('\n' + md);
}

if (values.child) child();
else await parent();
