/**
 * The cost of a boundary between two decode GEMVs (`check.ts --only boundaries`; bench/RESULTS.md
 * run 17): bench/gpu/boundaries.cu built with nvcc (or prebuilt), run once, its JSON turned into a
 * table. A diagnostic that decides whether decode should become one persistent kernel: not a check.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { execa } from 'execa';
import { gencodeFlags, nvccCommand } from '../../compiler/build/nvcc.js';
import { hashFiles, type SourceFile } from '../../compiler/emit/render.js';
import { packageRoot } from '../../compiler/paths.js';
import type { readManifest } from './libraries.js';

const SOURCE = join(packageRoot(), 'bench', 'gpu', 'boundaries.cu');

/** What the program compiles from: boundaries.cu, the kernels' headers it includes (mc_cuda.cuh and its parts) and mc_abi.h. */
export function boundariesSources(): SourceFile[] {
  const include = join(packageRoot(), 'templates', 'include');
  const headers = readdirSync(include).sort().map((f) => ({ path: f, content: readFileSync(join(include, f), 'utf8') }));
  return [
    { path: 'boundaries.cu', content: readFileSync(SOURCE, 'utf8') },
    ...headers,
    { path: 'mc_abi.h', content: readFileSync(join(packageRoot(), 'runtime', 'abi', 'mc_abi.h'), 'utf8') },
  ];
}

/** Compiles boundaries.cu (the 7B's shapes unless `defines` say otherwise) into dir; returns the binary. */
export async function buildBoundaries(dir: string, archs: readonly string[], defines: readonly string[] = []): Promise<string> {
  mkdirSync(dir, { recursive: true });
  const binary = join(dir, 'boundaries');
  await execa(nvccCommand(), [
    '-std=c++17', '-O3', '--expt-relaxed-constexpr', '-diag-suppress', '177', ...gencodeFlags(archs), ...defines.map((d) => `-D${d}`),
    '-I', join(packageRoot(), 'templates', 'include'), '-I', join(packageRoot(), 'runtime', 'abi'), SOURCE, '-o', binary,
  ]);
  return binary;
}

/** The prebuilt binary, if the manifest has one built from today's sources for these GPUs. */
export function prebuiltBoundaries(prebuilt: ReturnType<typeof readManifest>, archs: readonly string[]): string | undefined {
  const entry = prebuilt?.manifest.boundaries;
  if (entry === undefined || prebuilt!.manifest.archs.join(',') !== archs.join(',') || entry.sources !== hashFiles(boundariesSources())) return undefined;
  const path = isAbsolute(entry.binary) ? entry.binary : join(prebuilt!.dir, entry.binary);
  return existsSync(path) ? path : undefined;
}

export interface BoundaryVariant {
  name: string;
  ms: number;
  /** weight bytes ÷ copy bandwidth ÷ ms */
  fraction: number;
  /** (ms − streaming's ms) ÷ GEMVs, in µs */
  boundary_us: number;
}
export interface BoundariesResult {
  device: string;
  sms: number;
  blocks: number;
  layers: number;
  gemvs: number;
  weight_bytes: number;
  copy_gbs: number;
  limit_ms: number;
  ok: boolean;
  variants: BoundaryVariant[];
}

/**
 * Runs the program against `copyGbs` (the run's device-to-device copy bandwidth, GB/s, as the kernel
 * checker measures it); rejects with its output when it fails (a failed check included: exit 1).
 */
export async function runBoundaries(binary: string, copyGbs: number, args: readonly string[] = [], env: Readonly<Record<string, string>> = {}): Promise<BoundariesResult> {
  const run = await execa(binary, ['--json', '--copy-gbs', String(copyGbs), ...args], { reject: false, all: true, env });
  const line = String(run.stdout ?? '').split('\n').find((l) => l.startsWith('{'));
  if (run.exitCode !== 0 || line === undefined) throw new Error(`${binary} exited with ${run.exitCode}: ${String(run.all ?? '').trim()}`);
  return JSON.parse(line) as BoundariesResult;
}

/** The result as markdown lines for results.md. */
export function boundariesTable(r: BoundariesResult): string[] {
  return [
    `| boundaries (bench/gpu/boundaries.cu): ${r.layers} layers × 4 decode GEMVs of Mistral-7B, ${(r.weight_bytes / 1e9).toFixed(2)} GB | ms | fraction of the limit | µs a boundary against streaming |`,
    '|---|---|---|---|',
    ...r.variants.map((v) => `| ${v.name} | ${v.ms.toFixed(3)} | ${(100 * v.fraction).toFixed(1)}% | ${v.name === 'streaming' ? '—' : v.boundary_us.toFixed(2)} |`),
    '',
    `Limit: the weights ÷ the copy bandwidth of this run (${r.copy_gbs.toFixed(0)} GB/s, read + write): ${r.limit_ms.toFixed(3)} ms. ` +
      `kernels: the product's decode GEMV (mc::gemv_kernel) once per GEMV in one CUDA graph, PDL as decode launches it, x copied into shared memory by each block first; kernels-nopdl: without PDL; ` +
      `chain: the product's mc::gemv_chain (MC_CUDA_DECODE=chain), one cooperative launch a layer over its four GEMVs with grid barriers between them; ` +
      `persistent: one cooperative kernel of ${r.blocks} blocks (${r.sms} SMs), a grid barrier between two GEMVs, each warp's first loads of the next GEMV issued before the barrier, each warp its fixed rows; ` +
      `persistent-dynamic: the same, rows after each warp's first handed out as warps ask (a counter a GEMV); ` +
      `streaming: the same kernel with no barrier and no dependency (the floor); ` +
      `kernels-x-wo-w2: kernels with wo and w2 reading x in the stream, not from a shared-memory copy (the product's decode); kernels-x-all: every GEMV so. ` +
      `Outputs of every variant but streaming bit-identical; each last GEMV, and the first variant's last w1|w3, within 1e-5 of float64: ${r.ok ? 'yes' : 'NO'}.`,
  ];
}
