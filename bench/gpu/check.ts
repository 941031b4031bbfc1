/**
 * The GPU check and benchmark, one entry (`npm run gpu:check` on a machine with an NVIDIA GPU):
 *   kernels   every kernel on its own against a float64 reference (test/gpu/kernels.cu)
 *   logits    CUDA logits of random-weight tiny models against the CPU backend and the reference
 *   decode    our decode tokens/s at batch 1 (Mistral-7B, Mixtral-8x7B shapes), as a fraction of the
 *             bandwidth limit: weight bytes per token / device-to-device copy bandwidth of this run
 *   torch     PyTorch + transformers on the same GPU, same shapes and lengths
 * Prints a summary last and writes results.json and results.md under --out.
 *
 *   tsx bench/gpu/check.ts [--out DIR] [--only kernels,logits,decode,torch] [--prebuilt manifest.json] [--work DIR]
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

interface TorchResult { label: string; tokensPerSecond: number; msPerToken: number; prefillMs: number; versions: string; error?: string }

const { values } = parseArgs({
  options: {
    out: { type: 'string', default: '/tmp/mc-gpu-check/out' },
    work: { type: 'string', default: '/tmp/mc-gpu-check' },
    only: { type: 'string', default: 'kernels,logits,decode,torch' },
    prebuilt: { type: 'string' },
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
      log(`decode ${c.label}: ${r.tokensPerSecond.toFixed(1)} tokens/s (${r.msPerToken.toFixed(3)} ms/token, ${(r.weightBytesPerToken / 1e9).toFixed(2)} GB of weights per token), prefill ${c.prompt} tokens ${r.prefillMs.toFixed(1)} ms`);
    } catch (err) {
      log(`FAIL decode ${c.label}: ${(err as Error).message}`);
    }
  }
}

const torch: TorchResult[] = [];
if (sections.has('torch')) {
  for (const c of DECODE_CASES) {
    const config = decodeConfig(c);
    const run = await execa('python3', [join(packageRoot(), 'bench', 'gpu', 'torch_decode.py'), '--params', JSON.stringify(config), '--prompt', String(c.prompt), '--decode', String(c.decode)],
      { reject: false, all: true, env: { PYTHONUNBUFFERED: '1' } });
    const line = String(run.all ?? '').split('\n').reverse().find((l) => l.startsWith('{'));
    if (run.exitCode !== 0 || line === undefined) {
      const tail = String(run.all ?? '').split('\n').slice(-6).join(' | ');
      log(`FAIL torch ${c.label}: exit ${run.exitCode}: ${tail}`);
      torch.push({ label: c.label, tokensPerSecond: NaN, msPerToken: NaN, prefillMs: NaN, versions: '', error: tail });
      continue;
    }
    const r = JSON.parse(line) as { tokens_per_second: number; ms_per_token: number; prefill_ms: number; torch: string; transformers: string };
    torch.push({ label: c.label, tokensPerSecond: r.tokens_per_second, msPerToken: r.ms_per_token, prefillMs: r.prefill_ms, versions: `torch ${r.torch}, transformers ${r.transformers}` });
    log(`torch ${c.label}: ${r.tokens_per_second.toFixed(1)} tokens/s (${r.ms_per_token.toFixed(2)} ms/token), prefill ${r.prefill_ms.toFixed(1)} ms`);
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
  md.push('', '| decode, batch 1, bf16 | layers | weights/token | ours tokens/s | ms/token | bandwidth limit tokens/s | fraction of limit | PyTorch tokens/s | ours / PyTorch |', '|---|---|---|---|---|---|---|---|---|');
  for (const r of decode) {
    const limit = copyGbs === null ? NaN : (copyGbs * 1e9) / r.weightBytesPerToken;
    const t = torch.find((x) => x.label === r.label);
    md.push(`| ${r.label} | ${r.layers} | ${(r.weightBytesPerToken / 1e9).toFixed(2)} GB | ${r.tokensPerSecond.toFixed(1)} | ${r.msPerToken.toFixed(3)} | ${limit.toFixed(1)} | ${(100 * r.tokensPerSecond / limit).toFixed(1)}% | ${t ? t.tokensPerSecond.toFixed(1) : 'n/a'} | ${t ? (r.tokensPerSecond / t.tokensPerSecond).toFixed(2) : 'n/a'} |`);
  }
  const versions = torch.find((t) => t.versions !== '')?.versions;
  if (versions) md.push('', `PyTorch: ${versions}, eager, sdpa attention, dynamic cache, greedy, same prompt (${DECODE_CASES[0]!.prompt}) and decode (${DECODE_CASES[0]!.decode}) lengths.`);
}
writeFileSync(join(out, 'results.md'), md.join('\n') + '\n');
writeFileSync(join(out, 'results.json'), JSON.stringify({ device, copyGbs, kernels, logits, decode, torch }, null, 2) + '\n');
console.log('\n' + md.join('\n'));
const failed = kernels.some((k) => !k.passed) || logits.some((l) => !l.pass);
console.log(`\n${failed ? 'GPU CHECK FAILED' : 'GPU check passed'}`);
process.exitCode = failed ? 1 : 0;
