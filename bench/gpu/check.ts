/**
 * The GPU check and benchmark, one entry (`npm run gpu:check` on a machine with an NVIDIA GPU):
 *   kernels   every kernel on its own against a float64 reference (test/gpu/kernels.cu)
 *   logits    CUDA logits of random-weight tiny models against the CPU backend and the reference
 *   decode    our decode tokens/s at batch 1 (Mistral-7B, Mixtral-8x7B shapes), as a fraction of the
 *             bandwidth limit: weight bytes per token / device-to-device copy bandwidth of this run
 *   torch     PyTorch + transformers on the same GPU, same shapes and lengths: eager (dynamic cache)
 *             and compiled (static cache, torch.compile mode="reduce-overhead", CUDA graphs)
 * Prints a summary last and writes results.json and results.md under --out.
 *
 *   tsx bench/gpu/check.ts [--out DIR] [--only kernels,logits,decode,torch] [--prebuilt manifest.json] [--work DIR]
 *                          [--torch-peers eager,compiled] [--torch-timeout SECONDS]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { packageRoot } from '../../compiler/paths.js';
import { cpuLogitsPlan, DECODE_CASES, decodeConfig, decodePlan, KERNEL_CASES, LOGITS_CASES } from './cases.js';
import { benchDecode, writeSyntheticWeights, type DecodeResult } from './decode.js';
import { buildKernelCheck, copyBandwidth, runKernelCheck, type KernelCheckResult } from './kernel-check.js';
import { libraryFor, readManifest } from './libraries.js';
import { checkLogits, type LogitsResult } from './logits.js';

/** One PyTorch peer of a model: eager (dynamic cache) or compiled (static cache, torch.compile reduce-overhead). */
interface TorchPeer { tokensPerSecond: number; msPerToken: number; prefillMs: number; compileS?: number; error?: string }
interface TorchResult { label: string; eager: TorchPeer | null; compiled: TorchPeer | null; versions: string; error?: string }

const { values } = parseArgs({
  options: {
    out: { type: 'string', default: '/tmp/mc-gpu-check/out' },
    work: { type: 'string', default: '/tmp/mc-gpu-check' },
    only: { type: 'string', default: 'kernels,logits,decode,torch' },
    prebuilt: { type: 'string' },
    'torch-peers': { type: 'string', default: 'eager,compiled' },
    'torch-timeout': { type: 'string', default: '900' },
  },
});
const sections = new Set(values.only!.split(','));
const out = values.out!;
const work = values.work!;
mkdirSync(out, { recursive: true });
mkdirSync(work, { recursive: true });
const cacheDir = join(work, 'cache');
const prebuilt = readManifest(values.prebuilt);
const log = (line: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${line}`);
const e2 = (x: number | null) => (x === null ? 'n/a' : x.toExponential(2));

async function gpu(): Promise<{ name: string; archs: string[]; driver: string; memory: string }> {
  const q = await execa('nvidia-smi', ['--query-gpu=name,compute_cap,driver_version,memory.total', '--format=csv,noheader']);
  const [name, cap, driver, memory] = q.stdout.split('\n')[0]!.split(',').map((s) => s.trim());
  const [major, minor] = cap!.split('.');
  const arch = `sm_${major}${minor}${major === '9' ? 'a' : ''}`;
  return { name: name!, archs: [arch], driver: driver!, memory: memory! };
}

async function hasGxx(): Promise<boolean> {
  try {
    await execa(process.env.CXX ?? 'g++', ['--version']);
    return true;
  } catch {
    return false;
  }
}

const device = await gpu();
const withCpu = await hasGxx();
log(`GPU ${device.name} (${device.memory}, driver ${device.driver}), building for ${device.archs.join(',')}; CPU backend ${withCpu ? 'available' : 'missing (no g++): logits checked against the float64 reference only'}`);

const kernels: KernelCheckResult[] = [];
let copyGbs: number | null = null;
if (sections.has('kernels') || sections.has('decode')) {
  const first = KERNEL_CASES[0]!;
  const pre = prebuilt?.manifest.kernelChecks[`${first.config}.${first.dtype}`];
  const binary = pre !== undefined ? join(prebuilt!.dir, pre) : await buildKernelCheck(first, work, device.archs);
  copyGbs = await copyBandwidth(binary);
  log(`device-to-device copy: ${copyGbs.toFixed(0)} GB/s (read + write)`);
}
if (sections.has('kernels')) {
  for (const c of KERNEL_CASES) {
    const r = await runKernelCheck(c, { workDir: work, archs: device.archs, prebuilt });
    kernels.push(r);
    for (const line of r.lines) console.log(`  ${c.config}.${c.dtype}: ${line}`);
  }
}

const logits: LogitsResult[] = [];
if (sections.has('logits')) {
  if (withCpu) {
    // The CPU libraries (g++, one core each) in parallel up front; checkLogits then finds them cached.
    const started = performance.now();
    await Promise.all(LOGITS_CASES.map((c) => libraryFor(cpuLogitsPlan(c), { cacheDir })));
    log(`built ${LOGITS_CASES.length} CPU libraries in ${((performance.now() - started) / 1000).toFixed(0)} s`);
  }
  for (const c of LOGITS_CASES) {
    try {
      const r = await checkLogits(c, { workDir: work, cacheDir, archs: device.archs, withCpu, prebuilt });
      logits.push(r);
      log(`${r.pass ? 'ok  ' : 'FAIL'} logits ${c.name}: vs CPU prefill ${e2(r.prefillVsCpu)} decode ${e2(r.decodeVsCpu)}; vs float64 prefill ${e2(r.prefillVsReference)} decode ${e2(r.decodeVsReference)} (CPU vs float64 ${e2(r.cpuVsReference)}${r.cpuRowsSkipped > 0 ? `, ${r.cpuRowsSkipped} row(s) where the CPU backend is off float64 not judged against it` : ''}; tolerance ${e2(r.tolerance)}; seed ${r.seed})`);
    } catch (err) {
      log(`FAIL logits ${c.name}: ${(err as Error).message}`);
      logits.push({ name: c.name, dtype: c.dtype, seed: 0, prefillVsCpu: null, decodeVsCpu: null, prefillVsReference: Infinity, decodeVsReference: Infinity, cpuVsReference: null, tolerance: 0, cpuRowsSkipped: 0, pass: false });
    }
  }
}

const decode: DecodeResult[] = [];
if (sections.has('decode')) {
  const pool = join(work, 'synthetic-bf16.bin');
  writeSyntheticWeights(pool);
  for (const c of DECODE_CASES) {
    try {
      const plan = decodePlan(c);
      const { library } = await libraryFor(plan, { cacheDir, archs: device.archs, prebuilt });
      const r = benchDecode(c, plan, library, pool);
      decode.push(r);
      log(`decode ${c.label}: ${r.tokensPerSecond.toFixed(1)} tokens/s (${r.msPerToken.toFixed(3)} ms/token, median of ${r.msPerTokenRuns.length}: ${Math.min(...r.msPerTokenRuns).toFixed(3)}-${Math.max(...r.msPerTokenRuns).toFixed(3)}; ${(r.weightBytesPerToken / 1e9).toFixed(2)} GB of weights per token), prefill ${c.prompt} tokens ${r.prefillMs.toFixed(1)} ms`);
    } catch (err) {
      log(`FAIL decode ${c.label}: ${(err as Error).message}`);
    }
  }
}

const torch: TorchResult[] = [];
if (sections.has('torch')) {
  const peer = (r: { tokens_per_second: number; ms_per_token: number; prefill_ms: number; compile_s?: number } | undefined): TorchPeer | null =>
    r === undefined ? null : { tokensPerSecond: r.tokens_per_second, msPerToken: r.ms_per_token, prefillMs: r.prefill_ms, compileS: r.compile_s };
  for (const c of DECODE_CASES) {
    const config = decodeConfig(c);
    const run = await execa('python3', [join(packageRoot(), 'bench', 'gpu', 'torch_decode.py'), '--params', JSON.stringify(config), '--prompt', String(c.prompt), '--decode', String(c.decode), '--peers', values['torch-peers']!],
      { reject: false, all: true, env: { PYTHONUNBUFFERED: '1' }, timeout: Number(values['torch-timeout']) * 1000 });
    const lines = String(run.all ?? '').split('\n').filter((l) => l.startsWith('{'));
    const full = lines.reverse().find((l) => l.includes('"torch"'));
    // A killed run (timeout) may still have printed its eager line.
    const eagerOnly = lines.find((l) => l.startsWith('{"eager"'));
    if (full === undefined && eagerOnly === undefined) {
      const tail = String(run.all ?? '').split('\n').slice(-6).join(' | ');
      log(`FAIL torch ${c.label}: exit ${run.exitCode}${run.timedOut ? ' (timed out)' : ''}: ${tail}`);
      torch.push({ label: c.label, eager: null, compiled: null, versions: '', error: tail });
      continue;
    }
    const r = JSON.parse(full ?? eagerOnly!) as { eager?: Parameters<typeof peer>[0]; compiled?: Parameters<typeof peer>[0]; compiled_error?: string; torch?: string; transformers?: string };
    const compiled = peer(r.compiled) ?? (r.compiled_error !== undefined || run.timedOut
      ? { tokensPerSecond: NaN, msPerToken: NaN, prefillMs: NaN, error: r.compiled_error ?? `timed out after ${values['torch-timeout']} s` } : null);
    const result: TorchResult = { label: c.label, eager: peer(r.eager), compiled, versions: r.torch ? `torch ${r.torch}, transformers ${r.transformers}` : '' };
    torch.push(result);
    const show = (name: string, p: TorchPeer | null) => p === null ? '' : p.error ? `; ${name} FAILED: ${p.error}` :
      `; ${name} ${p.tokensPerSecond.toFixed(1)} tokens/s (${p.msPerToken.toFixed(2)} ms/token, prefill ${p.prefillMs.toFixed(1)} ms${p.compileS !== undefined ? `, compile ${p.compileS.toFixed(0)} s` : ''})`;
    log(`torch ${c.label}${show('eager', result.eager)}${show('compiled', result.compiled)}`);
  }
}

// ---- summary ----
const md: string[] = [];
md.push(`Device: ${device.name} (${device.memory}, driver ${device.driver}); libraries built for ${device.archs.join(',')}.`);
if (copyGbs !== null) md.push(`Device-to-device copy bandwidth (read + write, 2 GiB, median of 20): ${copyGbs.toFixed(0)} GB/s.`);
if (kernels.length > 0) {
  md.push('', '| kernel check (test/gpu/kernels.cu) | result |', '|---|---|');
  for (const k of kernels) {
    const summary = k.lines.find((l) => / checks, \d+ failed/.test(l)) ?? 'did not finish';
    md.push(`| ${k.config} ${k.dtype} | ${summary}${k.lines.filter((l) => l.startsWith('FAIL')).map((l) => `; ${l}`).join('')} |`);
  }
}
if (logits.length > 0) {
  md.push('', '| logits (rel. L2, worst row) | vs CPU prefill | vs CPU decode | vs float64 prefill | vs float64 decode | CPU vs float64 | tolerance | |', '|---|---|---|---|---|---|---|---|');
  for (const r of logits) md.push(`| ${r.name} | ${e2(r.prefillVsCpu)} | ${e2(r.decodeVsCpu)} | ${e2(r.prefillVsReference)} | ${e2(r.decodeVsReference)} | ${e2(r.cpuVsReference)} | ${e2(r.tolerance)} | ${r.pass ? 'ok' : 'FAIL'}${r.cpuRowsSkipped > 0 ? ` (${r.cpuRowsSkipped} CPU row(s) off float64)` : ''} |`);
}
if (decode.length > 0) {
  const tps = (p: TorchPeer | null | undefined) => (p && !p.error ? p.tokensPerSecond : NaN);
  const f1 = (x: number) => (Number.isNaN(x) ? 'n/a' : x.toFixed(1));
  const f2 = (x: number) => (Number.isNaN(x) ? 'n/a' : x.toFixed(2));
  md.push('', '| decode, batch 1, bf16 | layers | weights/token | ours tokens/s | ms/token | bandwidth limit tokens/s | fraction of limit | PyTorch eager tokens/s | PyTorch compiled tokens/s | compiled fraction of limit | ours / compiled |', '|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of decode) {
    const limit = copyGbs === null ? NaN : (copyGbs * 1e9) / r.weightBytesPerToken;
    const t = torch.find((x) => x.label === r.label);
    const eagerTps = tps(t?.eager), compiledTps = tps(t?.compiled);
    md.push(`| ${r.label} | ${r.layers} | ${(r.weightBytesPerToken / 1e9).toFixed(2)} GB | ${r.tokensPerSecond.toFixed(1)} | ${r.msPerToken.toFixed(3)} | ${limit.toFixed(1)} | ${(100 * r.tokensPerSecond / limit).toFixed(1)}% | ${f1(eagerTps)} | ${f1(compiledTps)} | ${Number.isNaN(compiledTps) ? 'n/a' : `${(100 * compiledTps / limit).toFixed(1)}%`} | ${f2(r.tokensPerSecond / compiledTps)} |`);
  }
  const versions = torch.find((t) => t.versions !== '')?.versions;
  if (versions) md.push('', `PyTorch: ${versions}, sdpa attention, greedy, same prompt (${DECODE_CASES[0]!.prompt}) and decode (${DECODE_CASES[0]!.decode}) lengths, 8 warm-up steps untimed; eager: dynamic cache; compiled: static cache, torch.compile(mode="reduce-overhead") on the decode step (CUDA graphs), compile steps untimed.`);
  for (const t of torch) if (t.compiled?.error) md.push('', `PyTorch compiled ${t.label}: failed (${t.compiled.error}).`);
}
writeFileSync(join(out, 'results.md'), md.join('\n') + '\n');
writeFileSync(join(out, 'results.json'), JSON.stringify({ device, copyGbs, kernels, logits, decode, torch }, null, 2) + '\n');
console.log('\n' + md.join('\n'));
const failed = kernels.some((k) => !k.passed) || logits.some((l) => !l.pass);
console.log(`\n${failed ? 'GPU CHECK FAILED' : 'GPU check passed'}`);
process.exitCode = failed ? 1 : 0;
