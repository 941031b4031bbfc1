import { execa } from 'execa';
import { BuildError } from './errors.js';

/**
 * nvcc for the cuda target: the command, the GPU architectures and the flags. One shared library
 * per build, with machine code for every architecture asked for (one -gencode each).
 */

/** Hopper (H100/H200, with the "a" features) and Ampere (A100): the GPUs the device profiles name. */
export const DEFAULT_ARCHS: readonly string[] = ['sm_90a', 'sm_80'];

/** $NVCC when set, else nvcc on PATH. */
export function nvccCommand(): string {
  return process.env.NVCC && process.env.NVCC.trim() !== '' ? process.env.NVCC.trim() : 'nvcc';
}

/**
 * sm_<major><minor>[a|f]: the forms nvcc accepts as a real architecture (major of one or two digits:
 * sm_80, sm_90a, sm_100a, sm_120). mma.sync bf16 needs sm_80+; "a" (arch-specific features) exists
 * from sm_90, "f" (family) from sm_100. Which ones this nvcc builds is asked of it at build time.
 */
const ARCH = /^sm_(\d{1,2})(\d)([af]?)$/;

/** Parses "sm_90a,sm_80" (order kept, duplicates dropped), naming the bad entry otherwise. */
export function parseArchs(text: string): string[] {
  const archs = [...new Set(text.split(',').map((a) => a.trim()).filter((a) => a !== ''))];
  if (archs.length === 0) throw new BuildError('--arch', undefined, 'names no architecture', `pass e.g. --arch ${DEFAULT_ARCHS.join(',')}`);
  for (const arch of archs) checkArch(arch);
  return archs;
}

export function checkArch(arch: string): void {
  const m = ARCH.exec(arch);
  if (m === null) throw new BuildError('--arch', undefined, `${JSON.stringify(arch)} is not a GPU architecture`, 'use names such as sm_90a (H100/H200) or sm_80 (A100)');
  if (Number(m[1]) < 8) {
    throw new BuildError('--arch', undefined, `${arch} is older than sm_80`, 'the kernels use bf16 tensor-core mma.sync and cp.async, which need sm_80 or newer');
  }
  if ((m[3] === 'a' && Number(m[1]) < 9) || (m[3] === 'f' && Number(m[1]) < 10)) {
    throw new BuildError('--arch', undefined, `${arch} does not exist: "${m[3]}" variants begin at sm_${m[3] === 'a' ? '90a' : '100f'}`, `use sm_${m[1]}${m[2]}`);
  }
}

const supportedByNvcc = new Map<string, Promise<string[] | null>>();

/**
 * Refuses, before the compile, an architecture this nvcc cannot build (its --list-gpu-code), with
 * the ones it can: nvcc's own failure comes only after its first minutes. Where nvcc cannot list
 * them (an old one, a wrapper), the compile decides.
 */
export async function checkArchsSupported(nvcc: string, archs: readonly string[]): Promise<void> {
  let listed = supportedByNvcc.get(nvcc);
  if (listed === undefined) {
    listed = execa(nvcc, ['--list-gpu-code']).then((r) => r.stdout.split(/\s+/).filter((a) => /^sm_\d+[af]?$/.test(a)), () => null);
    supportedByNvcc.set(nvcc, listed);
  }
  const codes = await listed;
  if (codes === null || codes.length === 0) return;
  // nvcc 13 lists base names only (sm_90 stands for sm_90a too); a list with suffixed names is compared name for name.
  const suffixed = codes.some((c) => /[af]$/.test(c));
  for (const arch of archs) {
    if (!codes.includes(suffixed ? arch : arch.replace(/[af]$/, ''))) {
      throw new BuildError('--arch', undefined, `${arch} is not built by this nvcc (${nvcc} --list-gpu-code: ${codes.join(' ')})`,
        'pick one of those (with "a" for arch-specific features, e.g. sm_90a), or use a newer CUDA toolkit');
    }
  }
}

/**
 * -gencode=arch=compute_90a,code=sm_90a per architecture (HOPPER.md: the -gencode form also builds
 * the sm_90a-only features where the -arch=sm_90a shorthand ran a plain sm_90 pass).
 */
export function gencodeFlags(archs: readonly string[]): string[] {
  return archs.map((arch) => `-gencode=arch=${arch.replace(/^sm_/, 'compute_')},code=${arch}`);
}

/**
 * Flags of a CUDA build: a shared library (-shared, -fPIC for the host code) with the CUDA runtime
 * linked statically (nvcc's default), so it loads on a machine with a driver and no toolkit;
 * hidden visibility except the mc_* ABI symbols.
 */
export function nvccFlags(archs: readonly string[]): string[] {
  for (const arch of archs) checkArch(arch);
  return [
    '-std=c++17', '-O3', '-shared', '-Xcompiler', '-fPIC', '-Xcompiler', '-fvisibility=hidden', '-cudart=static',
    '-lineinfo', '--expt-relaxed-constexpr', ...gencodeFlags(archs),
  ];
}
