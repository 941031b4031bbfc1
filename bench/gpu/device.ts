/** The GPU this run is on (nvidia-smi), and the one architecture its libraries are built for. */
import { execa } from 'execa';

export interface GpuInfo { name: string; archs: string[]; driver: string; memory: string }

export async function gpuInfo(): Promise<GpuInfo> {
  const q = await execa('nvidia-smi', ['--query-gpu=name,compute_cap,driver_version,memory.total', '--format=csv,noheader'], { reject: false });
  if (q.failed) {
    throw new Error(`no GPU to check: nvidia-smi ${q.exitCode === undefined ? 'is not installed' : `failed (exit ${q.exitCode}: ${String(q.stderr || q.stdout).trim().split('\n')[0]})`}; ` +
      'run the GPU check on a machine with an NVIDIA GPU and its driver (the CPU backend has npm test and npm run bench)');
  }
  const [name, cap, driver, memory] = q.stdout.split('\n')[0]!.split(',').map((s) => s.trim());
  const [major, minor] = cap!.split('.');
  const arch = `sm_${major}${minor}${major === '9' ? 'a' : ''}`;
  return { name: name!, archs: [arch], driver: driver!, memory: memory! };
}

/** The GPU's total memory in MiB, from nvidia-smi's "81559 MiB". */
export function memoryMiB(info: GpuInfo): number {
  const m = /^(\d+)\s*MiB$/.exec(info.memory);
  if (m === null) throw new Error(`nvidia-smi reported the GPU's memory as ${JSON.stringify(info.memory)}, not "N MiB"`);
  return Number(m[1]);
}
