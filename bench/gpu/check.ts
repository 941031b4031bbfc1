/**
 * The GPU check and benchmark, one entry (`npm run gpu:check` on a machine with an NVIDIA GPU):
 *   kernels   every kernel on its own against a float64 reference (test/gpu/kernels.cu)
 *   logits    CUDA logits of random-weight tiny models against the CPU backend and the reference
 *   decode    our decode tokens/s at batch 1 (Mistral-7B, Mixtral-8x7B shapes), as a fraction of the
 *             bandwidth limit: weight bytes per token / device-to-device copy bandwidth of this run
 *   long      the same after a long context (7B: its 4096-token window full; Mixtral: 16384
 *             positions), the limit counting the KV cache each token reads too
 *   prefill   our prefill of 128 and 512 tokens on the same loaded models, as a fraction of the
 *             matrix limit: a dense bf16 GEMM's TFLOP/s measured by torch.matmul in this run
 *   breakdown (not by default: a diagnostic) decode again with kernels left out, one variant a model
 *             load (MC_CUDA_DIAG_SKIP; bench/gpu/breakdown.ts): where a step's time goes, in situ
 *   boundaries (not by default: a diagnostic) what the boundary between two decode GEMVs costs as
 *             kernels in a graph and as a grid barrier in one persistent kernel (bench/gpu/boundaries.cu)
 *   torch     PyTorch + transformers on the same GPU, same shapes and lengths: eager (dynamic cache)
 *             and compiled (static cache, torch.compile mode="reduce-overhead", CUDA graphs), and an
 *             eager prefill of 512 tokens
 * Prints a summary last and writes results.json and results.md under --out. --cases limits decode,
 * prefill and torch to the named configs (e.g. --cases mistral-7b-v0.1). --gemm picks the prefill
 * GEMM engine of every CUDA library and kernel check of this run (it sets MC_CUDA_GEMM before any
 * library loads, so each engine needs its own run): wgmma (sm_90a, where the launch judges it
 * faster), mma (mma.sync only: the A/B peer), wgmma-all (sm_90a, every prefill GEMM: for the
 * checks). Without --gemm (or MC_CUDA_GEMM) each library takes its default: wgmma's rule on sm_90a,
 * mma.sync elsewhere; asking for wgmma by name where the code for this GPU has none fails the
 * kernel check. --prefetch-mb N[,M]: each decode
 * GEMV prefetches N MiB of the next GEMV's weights into L2 as its warps finish, M MiB where the
 * attention lies between the two (MC_CUDA_PREFETCH_MB; 0, the default, switches it off;
 * bench/RESULTS.md run 9), also one setting per run. --dtypes limits the kernel and logits checks to
 * those weight dtypes (default all three; a GEMM engine's run needs bf16,f16 only).
 *
 *   tsx bench/gpu/check.ts [--out DIR] [--only kernels,logits,decode,long,prefill,torch,breakdown,boundaries] [--cases CONFIG,...] [--prefetch-mb N[,M]]
 *                          [--gemm mma|wgmma|wgmma-all] [--dtypes bf16,f16,f32] [--prebuilt manifest.json] [--work DIR]
 *                          [--torch-peers eager,compiled] [--torch-timeout SECONDS]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import type { Plan } from '../../compiler/plan/types.js';
import type { NativeModelInstance } from '../../runtime/native.js';
import { cpuLogitsPlan, decodePlan, KERNEL_CASES, LOGITS_CASES, PREFILL_TOKENS, selectDecodeCases, type DecodeCase } from './cases.js';
import { benchDecode, benchDecodePromise, openSynthetic, writeSyntheticWeights, type DecodeResult } from './decode.js';
import { benchVariant, breakdownTable, breakdownVariants, diagSkipValue, type BreakdownResult } from './breakdown.js';
import { boundariesTable, buildBoundaries, prebuiltBoundaries, runBoundaries, type BoundariesResult } from './boundaries.js';
import { gpuInfo, memoryMiB } from './device.js';
import { buildKernelCheck, copyBandwidth, prebuiltKernelCheck, runKernelCheck, type KernelCheckResult } from './kernel-check.js';
import { libraryFor, readManifest } from './libraries.js';
import { checkLogits, type LogitsResult } from './logits.js';
import { benchPrefill, matrixLimit, PREFILL_REPEATS, PREFILL_WARMUP, type MatrixLimit, type PrefillResult } from './prefill.js';
import { runTorch, type TorchPeer, type TorchResult } from './torch-peer.js';

/** Tokens of the PyTorch peer's eager prefill: the longest we time. */
const TORCH_PREFILL_TOKENS = Math.max(...PREFILL_TOKENS);

const { values } = parseArgs({
  options: {
    out: { type: 'string', default: '/tmp/mc-gpu-check/out' },
    work: { type: 'string', default: '/tmp/mc-gpu-check' },
    only: { type: 'string', default: 'kernels,logits,decode,long,prefill,torch' },
    cases: { type: 'string' },
    dtypes: { type: 'string', default: 'bf16,f16,f32' },
    gemm: { type: 'string', default: process.env.MC_CUDA_GEMM ?? '' },  // '': the libraries' default
    'prefetch-mb': { type: 'string', default: process.env.MC_CUDA_PREFETCH_MB ?? '0' },
    prebuilt: { type: 'string' },
    'torch-peers': { type: 'string', default: 'eager,compiled' },
    'torch-timeout': { type: 'string', default: '900' },
  },
});
const sections = new Set(values.only!.split(','));
// Kernels left out would make every check fail and every timing too fast: only the breakdown sets it, per variant.
if (process.env.MC_CUDA_DIAG_SKIP) throw new Error('MC_CUDA_DIAG_SKIP is set in the environment: unset it (the breakdown section sets it for each of its variants)');
const SECTIONS = ['kernels', 'logits', 'decode', 'long', 'prefill', 'torch', 'breakdown', 'boundaries'];
for (const s of sections) if (!SECTIONS.includes(s)) throw new Error(`--only: unknown section ${s}; pass some of ${SECTIONS.join(',')}`);
// The kernel and logits checks of these weight dtypes only (f32 has no tensor-core GEMM: a run that checks
// a GEMM engine needs bf16 and f16 only).
const dtypes = new Set(values.dtypes!.split(','));
for (const d of dtypes) if (!['bf16', 'f16', 'f32'].includes(d)) throw new Error(`--dtypes: unknown dtype ${d}; pass some of bf16,f16,f32`);
const kernelCases = KERNEL_CASES.filter((c) => dtypes.has(c.dtype));
const logitsCases = LOGITS_CASES.filter((c) => dtypes.has(c.dtype));
const GEMM_ENGINES = ['wgmma', 'mma', 'wgmma-all'];
if (values.gemm !== '' && !GEMM_ENGINES.includes(values.gemm!)) throw new Error(`--gemm: unknown engine ${values.gemm}; pass one of ${GEMM_ENGINES.join(', ')}`);
// Read by each CUDA library when it first initializes (mc_device.cuh); unset, each GPU gets its default.
if (values.gemm === '') delete process.env.MC_CUDA_GEMM;
else process.env.MC_CUDA_GEMM = values.gemm;
const gemmWords = values.gemm === '' ? 'the default (wgmma where the launch judges it faster on sm_90a, else mma.sync; MC_CUDA_GEMM unset)' : `${values.gemm} (MC_CUDA_GEMM=${values.gemm})`;
// MiB of the next decode GEMV's weights each GEMV prefetches into L2 as it finishes (0: off; RESULTS run 9).
if (!/^\d+(,\d+)?$/.test(values['prefetch-mb']!)) {
  throw new Error(`--prefetch-mb: ${values['prefetch-mb']} is neither N nor N,M whole MiB (0 switches the L2 prefetch off; M: across the attention)`);
}
process.env.MC_CUDA_PREFETCH_MB = values['prefetch-mb'];
const out = values.out!;
const work = values.work!;
mkdirSync(out, { recursive: true });
mkdirSync(work, { recursive: true });
const cacheDir = join(work, 'cache');
const prebuilt = readManifest(values.prebuilt);
const log = (line: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${line}`);
/** MC_CUDA_PREFETCH_MB in words: "N" for every GEMV, "N,M" with M across the attention (mc_device.cuh). */
function prefetchWords(setting: string): string {
  const [between, across = between] = setting.split(',').map(Number) as [number, number?];
  if (between === 0 && across === 0) return 'nothing';
  return between === across ? `${between} MiB of the next GEMV's weights` : `${between} MiB of the next GEMV's weights (${across} MiB across the attention)`;
}
/** What MC_CUDA_A16 (mc_device.cuh: the fewest rows from which a prefill GEMM narrows A once) means, in words. */
function a16Words(setting: string | undefined): string {
  if (setting === undefined || setting === '' || setting === '1') return 'for every prefill';
  return setting === '0' ? 'never (A read through the Op)' : `from ${setting} tokens`;
}
/** MC_CUDA_DECODE (mc_device.cuh: a dense layer's decode GEMVs, and its attention, as one kernel, or one kernel each), in words. */
function decodeWords(): string {
  const mode = process.env.MC_CUDA_DECODE;
  if (mode === 'chain') return 'a dense layer\'s wo, w1|w3, w2 and the next layer\'s wq|wk|wv in one cooperative kernel with grid barriers (MC_CUDA_DECODE=chain)';
  if (mode === 'layer') {
    return 'a dense layer\'s decode attention, its combine, wo, w1|w3, w2 and the next layer\'s wq|wk|wv in one cooperative kernel with grid barriers ' +
      '(MC_CUDA_DECODE=layer; a model with more than 8 query heads a KV head: as chain)';
  }
  return 'one kernel a decode GEMV (MC_CUDA_DECODE unset)';
}
/** MC_CUDA_X (mc_device.cuh: where wo's and w2's decode GEMVs read their input), in words. */
function xWords(): string {
  return process.env.MC_CUDA_X === 'shared'
    ? 'every decode GEMV copies x into shared memory first (MC_CUDA_X=shared)'
    : 'wo and w2 read x in the stream, the other decode GEMVs copy it into shared memory first (MC_CUDA_X unset)';
}
/** MC_CUDA_ATTN_BLOCKS (mc_device.cuh: about how many blocks the decode attention's splits make), in words. */
function attnWords(): string {
  const setting = process.env.MC_CUDA_ATTN_BLOCKS;
  const split = setting === '256'
    ? 'the decode attention split for about 256 blocks (MC_CUDA_ATTN_BLOCKS=256)'
    : `the decode attention split for about 512 blocks where a KV head then has at most 64 splits, else 256 (MC_CUDA_ATTN_BLOCKS ${setting ? `=${setting}` : 'unset'})`;
  const cluster = Number(process.env.MC_CUDA_ATTN_CLUSTER || '0');
  const words = cluster > 0
    ? `${split}; where a layer's query sees at most ${cluster} positions one kernel instead, a cluster of up to 16 blocks a KV head merging its splits in distributed shared memory (MC_CUDA_ATTN_CLUSTER=${cluster})`
    : split;
  // A dense model's layer chain runs its own attention phases, whatever MC_CUDA_ATTN_CLUSTER says.
  return process.env.MC_CUDA_DECODE === 'layer' ? `${words}; a dense model's layer chain splits for about 256 instead` : words;
}
/** MC_CUDA_PDL and MC_CUDA_PDL_TRIGGER (mc_device.cuh: which decode kernels launch with PDL, and when a GEMV lets the next one launch), in words. */
function pdlWords(): string {
  const pdl = process.env.MC_CUDA_PDL || 'gemv', trigger = process.env.MC_CUDA_PDL_TRIGGER || 'exit';
  const which = pdl === 'off' ? 'no kernel' : pdl === 'all' ? 'the decode GEMVs and the kernels between them' : 'the decode GEMVs';
  const when = pdl === 'off' ? 'n/a' : trigger === 'last-rows' ? 'as its last loads are in flight' : 'as it exits';
  return `launched with PDL (on sm_90 and later): ${which} (MC_CUDA_PDL=${pdl}), a GEMV's dependents launch ${when} (MC_CUDA_PDL_TRIGGER=${trigger})`;
}
const e2 = (x: number | null) => (x === null ? 'n/a' : x.toExponential(2));

async function hasGxx(): Promise<boolean> {
  try {
    await execa(process.env.CXX ?? 'g++', ['--version']);
    return true;
  } catch {
    return false;
  }
}

const device = await gpuInfo();
// Mixtral with as many layers as fit this GPU (26 of 32 in 80 GB, all 32 on an H200).
const decodeCases = selectDecodeCases(values.cases, memoryMiB(device));
const longCases = selectDecodeCases(values.cases, memoryMiB(device), 'long');
const withCpu = await hasGxx();
log(`GPU ${device.name} (${device.memory}, driver ${device.driver}), building for ${device.archs.join(',')}; prefill GEMM engine ${gemmWords}; L2 prefetch ${values['prefetch-mb']} MiB; ${pdlWords()}; CPU backend ${withCpu ? 'available' : 'missing (no g++): logits checked against the float64 reference only'}`);

const kernels: KernelCheckResult[] = [];
let copyGbs: number | null = null;
if (sections.has('kernels') || sections.has('decode') || sections.has('long') || sections.has('prefill') || sections.has('breakdown') || sections.has('boundaries')) {
  const first = KERNEL_CASES[0]!;
  const binary = prebuiltKernelCheck(first, prebuilt, device.archs) ?? await buildKernelCheck(first, work, device.archs);
  copyGbs = await copyBandwidth(binary);
  log(`device-to-device copy: ${copyGbs.toFixed(0)} GB/s (read + write)`);
}
// Its own process, first: it needs ~16 GB of device memory with no model loaded beside it.
let boundaries: BoundariesResult | { error: string } | null = null;
if (sections.has('boundaries')) {
  try {
    const binary = prebuiltBoundaries(prebuilt, device.archs) ?? await buildBoundaries(join(work, 'boundaries'), device.archs);
    const r = await runBoundaries(binary, copyGbs!);
    boundaries = r;
    log(`boundaries: ${r.variants.map((v) => `${v.name} ${v.ms.toFixed(3)} ms (${(100 * v.fraction).toFixed(1)}%${v.name === 'streaming' ? '' : `, ${v.boundary_us.toFixed(2)} µs a boundary`})`).join('; ')}; checks ${r.ok ? 'ok' : 'FAILED'}`);
  } catch (err) {
    boundaries = { error: (err as Error).message };
    log(`FAIL boundaries: ${(err as Error).message}`);
  }
}
if (sections.has('kernels')) {
  for (const c of kernelCases) {
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
    await Promise.all(logitsCases.map((c) => libraryFor(cpuLogitsPlan(c), { cacheDir })));
    log(`built ${logitsCases.length} CPU libraries in ${((performance.now() - started) / 1000).toFixed(0)} s`);
  }
  for (const c of logitsCases) {
    try {
      const r = await checkLogits(c, { workDir: work, cacheDir, archs: device.archs, withCpu, prebuilt });
      logits.push(r);
      log(`${r.pass ? 'ok  ' : 'FAIL'} logits ${c.name}: vs CPU prefill ${e2(r.prefillVsCpu)} decode ${e2(r.decodeVsCpu)}; vs float64 prefill ${e2(r.prefillVsReference)} decode ${e2(r.decodeVsReference)} (worst row vs float64 ${e2(r.worstRowVsReference)}, vs CPU ${e2(r.worstRowVsCpu)}; CPU vs float64 ${e2(r.cpuVsReference)}${r.routingGap !== null ? `; routing gap ${r.routingGap.toFixed(3)} after ${r.tokenDraws} draw(s)` : ''}; tolerance ${e2(r.tolerance)}; KV snapshot ${r.snapshotExact === null ? 'not checked' : r.snapshotExact ? 'exact' : 'DIFFERS'}; seed ${r.seed})`);
    } catch (err) {
      log(`FAIL logits ${c.name}: ${(err as Error).message}`);
      logits.push({ name: c.name, dtype: c.dtype, seed: 0, prefillVsCpu: null, decodeVsCpu: null, prefillVsReference: Infinity, decodeVsReference: Infinity, cpuVsReference: null, worstRowVsReference: Infinity, worstRowVsCpu: null, tolerance: 0, tokenDraws: 0, routingGap: null, snapshotExact: null, pass: false });
    }
  }
}

const decode: DecodeResult[] = [];
const prefill: PrefillResult[] = [];
let matrix: MatrixLimit | { error: string } | null = null;
if (sections.has('prefill')) {
  // Before any model is loaded: the GEMM's 384 MB and cuBLAS workspace then fit beside nothing else.
  matrix = await matrixLimit();
  log('error' in matrix ? `matrix limit: n/a (${matrix.error})` : `matrix limit: ${matrix.tflops.toFixed(0)} TFLOP/s (bf16 ${matrix.n}^3 torch.matmul, ${matrix.ms.toFixed(3)} ms, median of 10)`);
}
/**
 * Loads case c's benchmark model (views of the synthetic pool, copied to the device) and hands it to
 * `run`, closing it after; a failure is logged as "FAIL <what> <label>" and the check goes on.
 */
async function onSyntheticModel(c: DecodeCase, what: string, run: (plan: Plan, model: NativeModelInstance) => void | Promise<void>): Promise<void> {
  const pool = join(work, 'synthetic-bf16.bin');
  writeSyntheticWeights(pool);
  let model: NativeModelInstance | undefined;
  try {
    const plan = decodePlan(c);
    const { library } = await libraryFor(plan, { cacheDir, archs: device.archs, prebuilt });
    model = openSynthetic(plan, library, pool);
    await run(plan, model);
  } catch (err) {
    log(`FAIL ${what} ${c.label}: ${(err as Error).message}`);
  } finally {
    model?.close();
  }
}
const decodeLine = (r: DecodeResult) =>
  `${r.tokensPerSecond.toFixed(1)} tokens/s (${r.msPerToken.toFixed(3)} ms/token, median of ${r.msPerTokenRuns.length}: ${Math.min(...r.msPerTokenRuns).toFixed(3)}-${Math.max(...r.msPerTokenRuns).toFixed(3)}`;

if (sections.has('decode') || sections.has('prefill')) {
  // One load serves both timings: each copies 14-71 GB of weights to the device.
  for (const c of decodeCases) {
    await onSyntheticModel(c, 'decode/prefill', async (plan, model) => {
      if (sections.has('decode')) {
        const r = benchDecode(c, plan, model);
        decode.push(r);
        log(`decode ${c.label}: ${decodeLine(r)}; ${(r.weightBytesPerToken / 1e9).toFixed(2)} GB of weights per token), prefill ${c.prompt} tokens ${r.prefillMs.toFixed(1)} ms`);
        // What the runtime's promise adds to a token (generate() awaits one a step).
        const p = await benchDecodePromise(c, plan, model);
        log(`decode ${c.label} through forward() (a promise): ${p.promiseMsPerToken.toFixed(3)} ms/token against forwardSync's ${p.syncMsPerToken.toFixed(3)} alternating: ${p.extraUsPerToken >= 0 ? '+' : ''}${p.extraUsPerToken.toFixed(1)} µs a token`);
      }
      if (sections.has('prefill')) {
        for (const tokens of PREFILL_TOKENS) {
          const r = benchPrefill(c, plan, model, tokens);
          prefill.push(r);
          log(`prefill ${c.label}, ${tokens} tokens: ${r.ms.toFixed(2)} ms (median of ${r.msRuns.length}: ${Math.min(...r.msRuns).toFixed(2)}-${Math.max(...r.msRuns).toFixed(2)}), ${r.tokensPerSecond.toFixed(0)} tokens/s, ${(r.flops.total / 1e12).toFixed(2)} TFLOP at ${r.tflops.toFixed(1)} TFLOP/s`);
        }
      }
    });
  }
}

// The same models after a long context (longDecodeCases): the KV cache is then part of each token's bytes.
const long: DecodeResult[] = [];
if (sections.has('long')) {
  for (const c of longCases) {
    await onSyntheticModel(c, 'long-context decode', (plan, model) => {
      const r = benchDecode(c, plan, model);
      long.push(r);
      log(`decode ${c.label}: ${decodeLine(r)}; ${(r.weightBytesPerToken / 1e9).toFixed(2)} GB of weights and ${(r.kvBytesPerToken / 1e9).toFixed(2)} GB of KV cache per token), prefill ${c.prompt} tokens in chunks of ${plan.options.maxTokens}: ${r.prefillMs.toFixed(0)} ms`);
    });
  }
}

// Decode with kernels left out: each variant its own model (the library reads MC_CUDA_DIAG_SKIP at mc_create).
const breakdown: BreakdownResult[] = [];
if (sections.has('breakdown')) {
  for (const c of decodeCases) {
    const plan = decodePlan(c);
    for (const v of breakdownVariants(plan)) {
      const value = diagSkipValue(plan, v);
      if (value !== undefined) process.env.MC_CUDA_DIAG_SKIP = value;
      try {
        await onSyntheticModel(c, `breakdown (${v.label})`, (plan, model) => {
          const r = benchVariant(c, plan, model, v);
          breakdown.push(r);
          log(`breakdown ${c.label}, ${v.label}: ${r.msPerToken.toFixed(3)} ms/token (median of ${r.msPerTokenRuns.length}: ${Math.min(...r.msPerTokenRuns).toFixed(3)}-${Math.max(...r.msPerTokenRuns).toFixed(3)}); ${((r.weightBytesPerToken + r.kvBytesPerToken) / 1e9).toFixed(3)} GB read`);
        });
      } finally {
        delete process.env.MC_CUDA_DIAG_SKIP;
      }
    }
  }
}

const torch: TorchResult[] = [];
if (sections.has('torch')) {
  for (const c of decodeCases) {
    const result = await runTorch(c, { peers: values['torch-peers']!, timeoutS: Number(values['torch-timeout']), prefillTokens: TORCH_PREFILL_TOKENS });
    torch.push(result);
    if (result.error !== undefined) {
      log(`FAIL torch ${c.label}: ${result.error}`);
      continue;
    }
    const show = (name: string, p: TorchPeer | null) => p === null ? '' : p.error ? `; ${name} FAILED: ${p.error}` :
      `; ${name} ${p.tokensPerSecond.toFixed(1)} tokens/s (${p.msPerToken.toFixed(2)} ms/token, prefill ${p.prefillMs.toFixed(1)} ms${p.compileS !== undefined ? `, compile ${p.compileS.toFixed(0)} s` : ''})`;
    const p = result.prefill;
    const showPrefill = p === null ? '' : p.error ? `; prefill ${p.tokens} FAILED: ${p.error}` : `; eager prefill ${p.tokens} tokens ${p.ms.toFixed(1)} ms`;
    log(`torch ${c.label}${show('eager', result.eager)}${show('compiled', result.compiled)}${showPrefill}`);
  }
}

// ---- summary ----
// The measurements first, before any formatting that could fail at the end of a long run.
writeFileSync(join(out, 'results.json'), JSON.stringify({ device, copyGbs, matrix, kernels, logits, decode, long, prefill, breakdown, boundaries, torch }, null, 2) + '\n');
const md: string[] = [];
md.push(`Device: ${device.name} (${device.memory}, driver ${device.driver}); libraries built for ${device.archs.join(',')}; prefill GEMM engine: ${gemmWords}; ` +
  `decode GEMVs prefetch ${prefetchWords(values['prefetch-mb']!)} into L2 (MC_CUDA_PREFETCH_MB=${values['prefetch-mb']}); ` +
  `prefill GEMMs narrow A once: ${a16Words(process.env.MC_CUDA_A16)} (MC_CUDA_A16${process.env.MC_CUDA_A16 ? `=${process.env.MC_CUDA_A16}` : ' unset'}); ` +
  `${pdlWords()}; decode: ${decodeWords()}; ${xWords()}; ${attnWords()}; grids of fewer small-tile blocks than SMs that cannot split K take the ${process.env.MC_CUDA_GEMM_DEEP === '0' ? '4' : '8'}-stage small tile (MC_CUDA_GEMM_DEEP${process.env.MC_CUDA_GEMM_DEEP ? `=${process.env.MC_CUDA_GEMM_DEEP}` : ' unset'}).`);
if (copyGbs !== null) md.push(`Device-to-device copy bandwidth (read + write, 2 GiB, median of 20): ${copyGbs.toFixed(0)} GB/s.`);
if (kernels.length > 0) {
  md.push('', '| kernel check (test/gpu/kernels.cu) | result |', '|---|---|');
  for (const k of kernels) {
    const summary = k.lines.find((l) => / checks, \d+ failed/.test(l)) ?? 'did not finish';
    md.push(`| ${k.config} ${k.dtype} | ${summary}${k.lines.filter((l) => l.startsWith('FAIL')).map((l) => `; ${l}`).join('')} |`);
  }
}
if (logits.length > 0) {
  md.push('', '| logits (rel. L2 of each phase\'s rows together) | vs CPU prefill | vs CPU decode | vs float64 prefill | vs float64 decode | CPU vs float64 | worst row vs float64 (not judged) | tolerance | |',
    '|---|---|---|---|---|---|---|---|---|');
  for (const r of logits) {
    md.push(`| ${r.name} | ${e2(r.prefillVsCpu)} | ${e2(r.decodeVsCpu)} | ${e2(r.prefillVsReference)} | ${e2(r.decodeVsReference)} | ${e2(r.cpuVsReference)} | ${e2(r.worstRowVsReference)} | ${e2(r.tolerance)} | ${r.pass ? 'ok' : 'FAIL'} |`);
  }
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
  if (versions) md.push('', `PyTorch: ${versions}, sdpa attention, greedy, same prompt (${decodeCases[0]!.prompt}) and decode (${decodeCases[0]!.decode}) lengths, 8 warm-up steps untimed; eager: dynamic cache; compiled: static cache, torch.compile(mode="reduce-overhead") on the decode step (CUDA graphs), compile steps untimed.`);
  for (const t of torch) if (t.compiled?.error) md.push('', `PyTorch compiled ${t.label}: failed (${t.compiled.error}).`);
}
if (long.length > 0) {
  md.push('', '| decode at a long context, batch 1, bf16 | layers | positions | weights/token | KV cache/token | ours tokens/s | ms/token | bandwidth limit tokens/s | fraction of limit | ms/token of the same model above |', '|---|---|---|---|---|---|---|---|---|---|');
  for (const r of long) {
    const limit = copyGbs === null ? NaN : (copyGbs * 1e9) / (r.weightBytesPerToken + r.kvBytesPerToken);
    const short = decode.find((d) => r.label.startsWith(`${d.label}, at `));
    md.push(`| ${r.label} | ${r.layers} | ${r.prompt + 8}-${r.prompt + 8 + r.decode * r.msPerTokenRuns.length - 1} | ${(r.weightBytesPerToken / 1e9).toFixed(2)} GB | ${(r.kvBytesPerToken / 1e9).toFixed(2)} GB | ${r.tokensPerSecond.toFixed(1)} | ${r.msPerToken.toFixed(3)} | ${limit.toFixed(1)} | ${(100 * r.tokensPerSecond / limit).toFixed(1)}% | ${short === undefined ? 'n/a' : short.msPerToken.toFixed(3)} |`);
  }
  md.push('', 'Long context: the prompt prefilled in chunks, 8 untimed steps, then the median of the timed repetitions (one after another); the limit counts the weights and the keys and values every layer reads (a window\'s last positions, else all).');
}
if (prefill.length > 0) {
  const limit = matrix === null || 'error' in matrix ? NaN : matrix.tflops;
  md.push('', '| prefill, batch 1, bf16 | P | ours ms | ours tokens/s | TFLOP/s | fraction of matrix limit | weight-read floor ms | fraction of it | PyTorch eager ms | ours / PyTorch |', '|---|---|---|---|---|---|---|---|---|---|');
  for (const r of prefill) {
    const t = torch.find((x) => x.label === r.label)?.prefill;
    const torchMs = t && !t.error && t.tokens === r.tokens ? t.ms : NaN;
    const floorMs = copyGbs === null ? NaN : r.weightBytes / (copyGbs * 1e9) * 1e3;
    md.push(`| ${r.label} | ${r.tokens} | ${r.ms.toFixed(2)} (${Math.min(...r.msRuns).toFixed(2)}-${Math.max(...r.msRuns).toFixed(2)}) | ${r.tokensPerSecond.toFixed(0)} | ${r.tflops.toFixed(1)} | ${Number.isNaN(limit) ? 'n/a' : `${(100 * r.tflops / limit).toFixed(1)}%`} | ${Number.isNaN(floorMs) ? 'n/a' : floorMs.toFixed(2)} | ${Number.isNaN(floorMs) ? 'n/a' : `${(100 * floorMs / r.ms).toFixed(1)}%`} | ${Number.isNaN(torchMs) ? 'n/a' : torchMs.toFixed(2)} | ${Number.isNaN(torchMs) ? 'n/a' : `${(torchMs / r.ms).toFixed(2)}×`} |`);
  }
  md.push('', `Prefill: one call of P random tokens at position 0, last row's logits only; ${PREFILL_WARMUP} untimed calls, then the median (range) of ${PREFILL_REPEATS}. ` +
    'Weight-read floor: the weight bytes the call reads at least once (all but P embedding rows; of the experts, the share P tokens routed uniformly would use) ÷ the copy bandwidth. ' +
    'FLOPs = 2 × P × (linear weight elements a token multiplies: attention, gate, top-k of the experts; not the embedding) + 2 × vocab × dim (output row) + the sum over layers of 4 × n_heads × head_dim × the (query, key) pairs its causal mask and window leave visible. ' +
    (matrix === null || 'error' in matrix ? `Matrix limit: n/a${matrix !== null ? ` (${matrix.error})` : ''}.` : `Matrix limit: ${matrix.tflops.toFixed(0)} TFLOP/s, a bf16 ${matrix.n}³ torch.matmul (${matrix.torch}), median of 10 after 3 warm-up calls.`) +
    ` PyTorch: eager, sdpa, dynamic cache, ${TORCH_PREFILL_TOKENS} tokens, median of 3 after a warm-up; ours / PyTorch = its ms / ours.`);
}
if (breakdown.length > 0) md.push('', ...breakdownTable(breakdown, copyGbs));
if (boundaries !== null) md.push('', ...('error' in boundaries ? [`Boundaries: FAILED (${boundaries.error}).`] : boundariesTable(boundaries)));
writeFileSync(join(out, 'results.md'), md.join('\n') + '\n');
console.log('\n' + md.join('\n'));
const failed = kernels.some((k) => !k.passed) || logits.some((l) => !l.pass) || (boundaries !== null && ('error' in boundaries || !boundaries.ok));
console.log(`\n${failed ? 'GPU CHECK FAILED' : 'GPU check passed'}`);
process.exitCode = failed ? 1 : 0;
