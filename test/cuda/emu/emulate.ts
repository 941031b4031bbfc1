/**
 * Builds CUDA sources for the CPU emulator (mc_emu.hpp): the rendered kernels and headers unchanged
 * except for the two forms g++ cannot parse — `kernel<<<grid, block, smem, stream>>>(args)` and
 * `extern __shared__ T name[];` — and static `__shared__ T name[N];` (junk at each block's start),
 * plus the emulator's cuda_runtime.h and mc_ptx.cuh in place of CUDA's runtime header and the
 * inline PTX. Used by the emulated kernel checks (CI has no GPU).
 */
import { execa } from 'execa';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeSources } from '../../../compiler/build/cache.js';
import { nvccCommand } from '../../../compiler/build/nvcc.js';
import type { SourceFile } from '../../../compiler/emit/render.js';
import { packageRoot } from '../../../compiler/paths.js';

const EMU_DIR = join(packageRoot(), 'test', 'cuda', 'emu');
/** The emulator's files that the build uses instead of CUDA's runtime header, templates/include/mc_ptx.cuh and mc_nccl.hpp. */
const EMU_FILES = ['cuda_runtime.h', 'mc_emu.hpp', 'mc_ptx.cuh', 'mc_nccl.hpp'];

// A kernel name, possibly qualified and with one level of nested template arguments.
const CALLEE = String.raw`((?:::)?[A-Za-z_][\w:]*(?:<[^<>;{}]*(?:<[^<>;{}]*>[^<>;{}]*)*>)?)`;
const CHEVRON = new RegExp(`${CALLEE}\\s*<<<([\\s\\S]*?)>>>\\s*\\(`, 'g');
const DYNAMIC_SMEM = /extern\s+__shared__\s+([\w:]+)\s+(\w+)\s*\[\s*\]\s*;/g;
// `__shared__ T name[N];` (not extern): junk at every block's start (mc_emu::static_smem), one array per declaration.
const STATIC_SMEM = /(?<!extern\s+)__shared__\s+([\w:]+)\s+(\w+)\s*\[([^\]\[;]+)\]\s*;/g;

/** The source with its launches and dynamic shared memory in the emulator's C++ spelling. */
export function emulatorSpelling(source: string): string {
  const out = source
    .replace(CHEVRON, (_, kernel: string, config: string) => `::mc_emu::chevron(${kernel}, ${JSON.stringify(kernel)}, ${config})(`)
    .replace(DYNAMIC_SMEM, (_, type: string, name: string) => `${type}* const ${name} = ::mc_emu::dynamic_smem<${type}>();`)
    .replace(STATIC_SMEM, (_, type: string, name: string, size: string) => `${type} (&${name})[${size}] = ::mc_emu::static_smem<${type}[${size}], __COUNTER__>();`);
  // Any other form (two dimensions, a scalar, volatile) would fall back to a plain static, which keeps the previous block's values.
  const left = /^[ \t]*(?:static[ \t]+|volatile[ \t]+)*__shared__\b.*$/m.exec(out);
  if (left !== null) throw new Error(`emulate.ts: a __shared__ declaration the emulator does not rewrite (write it as \`__shared__ T name[N];\`): ${left[0].trim()}`);
  return out;
}

/** The rendered files for the emulator: C++ spelling, and the emulator's headers beside them. */
export function emulatorSources(files: readonly SourceFile[]): SourceFile[] {
  const out = files.filter((f) => !EMU_FILES.includes(f.path)).map((f) => ({ path: f.path, content: emulatorSpelling(f.content) }));
  return [...out, ...EMU_FILES.map((path) => ({ path, content: readFileSync(join(EMU_DIR, path), 'utf8') }))];
}

let includeDir: Promise<string> | undefined;
/** CUDA's include directory (for cuda_bf16.h and the runtime's declarations), as nvcc itself passes it. */
export function cudaIncludeDir(): Promise<string> {
  includeDir ??= (async () => {
    const run = await execa(nvccCommand(), ['--dryrun', '-c', '-x', 'cu', '/dev/null', '-o', '/dev/null'], { reject: false, all: true });
    const m = /INCLUDES="-I([^"]+?)"/.exec(String(run.all ?? ''));
    if (m === null) throw new Error(`could not find CUDA's include directory in the output of \`${nvccCommand()} --dryrun\``);
    return m[1]!.trim();
  })();
  return includeDir;
}

export const WEIGHT_TYPE = { f32: 'float', bf16: 'mc::bf16', f16: 'mc::f16' } as const;

/**
 * The g++ flags of every emulated build. -ftrivial-auto-var-init=pattern: a local read before it is
 * written (a register on a GPU: garbage) holds a NaN-like pattern, not the zeros of a fresh fiber
 * stack that let such a kernel pass. -fsanitize=alignment: a float4 or uint4 access at an address
 * that is not a multiple of 16 (a GPU faults: "misaligned address"; x86 does not mind) ends the
 * run with UBSan's line. -rdynamic lets the emulator name a failing kernel in an executable.
 */
async function emulatorFlags(src: string, defines: readonly string[], level = '-O1'): Promise<string[]> {
  return ['-std=c++17', level, '-g0', '-fopenmp', '-w', '-ftrivial-auto-var-init=pattern', '-fsanitize=alignment', '-fno-sanitize-recover=alignment', '-I', src, '-I', await cudaIncludeDir(), '-include', 'cuda_runtime.h', ...defines.map((d) => `-D${d}`)];
}

/**
 * A model's CUDA library (model.cu, the same ABI as nvcc's build) compiled for the emulator into
 * dir/libmodel-emulated.so: the runtime loads it like any compiled library. At -Og, not -O1: its
 * users run a few tiny forwards (~1 s) after a build that took ~20 s at -O1 and ~13 s at -Og
 * (tiny-dense bf16 on CI's machine; the run ~0.8 → ~1.2 s). The kernel checks (buildEmulated),
 * whose runs take longer than their builds, stay at -O1.
 */
export async function buildEmulatedLibrary(files: readonly SourceFile[], dir: string): Promise<string> {
  const src = join(dir, 'src');
  mkdirSync(src, { recursive: true });
  writeSources(src, emulatorSources(files));
  const library = join(dir, 'libmodel-emulated.so');
  await execa('g++', [...await emulatorFlags(src, [], '-Og'), '-shared', '-fPIC', '-fvisibility=hidden', '-Wl,--no-undefined', '-x', 'c++', join(src, 'model.cu'), '-o', library]);
  return library;
}

/**
 * Compiles `main` (a .cu file: test/gpu/kernels.cu) against rendered sources for the emulator into
 * dir; returns the binary. `level`: -O1, or -Og for a binary whose runs are short next to its build
 * (as buildEmulatedLibrary's).
 */
export async function buildEmulated(files: readonly SourceFile[], main: string, dir: string, defines: readonly string[], level: '-O1' | '-Og' = '-O1'): Promise<string> {
  const src = join(dir, 'src');
  mkdirSync(src, { recursive: true });
  writeSources(src, emulatorSources(files));
  writeSources(src, [{ path: 'main.cpp', content: emulatorSpelling(readFileSync(main, 'utf8')) }]);
  const binary = join(dir, 'emulated');
  await execa('g++', [...await emulatorFlags(src, defines, level), '-rdynamic', join(src, 'main.cpp'), '-o', binary]);
  return binary;
}

/** test/gpu/kernels.cu (the GPU check's per-kernel checks) built against a config's rendered sources for the emulator in dir. */
export function buildEmulatedKernelChecks(files: readonly SourceFile[], dtype: keyof typeof WEIGHT_TYPE, dir: string): Promise<string> {
  return buildEmulated(files, join(packageRoot(), 'test', 'gpu', 'kernels.cu'), dir, [`MC_WEIGHT=${WEIGHT_TYPE[dtype]}`]);
}

export interface KernelCheckRun {
  /** kernels.cu's input seed, also the emulator's schedule (MC_EMU_SEED). */
  seed: string;
  /** The two prefill lengths checked beside decode. */
  tokens: readonly [number, number];
  /** MC_CUDA_GEMM: wgmma (the default engine: where the launch judges it faster), mma (mma.sync only), wgmma-all. */
  engine: string;
  /** The emulated device's multiprocessors (MC_EMU_SMS; the emulator's default 8 when absent). */
  sms?: number;
  /** OMP_NUM_THREADS of the float64 references (absent: OpenMP's default, every core). */
  threads?: number;
  /** 'inherit': the checks print to this process's output (the CLI); else captured into `all`. */
  output?: 'capture' | 'inherit';
  /** More of the library's switches (MC_CUDA_PDL, MC_CUDA_PDL_TRIGGER, ...). */
  env?: Readonly<Record<string, string>>;
}

/** Runs a binary of buildEmulatedKernelChecks; never rejects (its exit code says whether every check passed). */
export function runEmulatedKernelChecks(binary: string, run: KernelCheckRun) {
  const env: Record<string, string> = { ...run.env, MC_CUDA_GEMM: run.engine, MC_EMU_SEED: run.seed };
  if (run.sms !== undefined) env.MC_EMU_SMS = String(run.sms);
  if (run.threads !== undefined) env.OMP_NUM_THREADS = String(run.threads);
  const args = [run.seed, String(run.tokens[0]), String(run.tokens[1])];
  return run.output === 'inherit'
    ? execa(binary, args, { reject: false, stdout: 'inherit', stderr: 'inherit', env })
    : execa(binary, args, { reject: false, all: true, env });
}
