import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';

/** nvcc runs here (CI has nvcc 13 and no GPU). */
export function hasNvcc(): boolean {
  try {
    execFileSync(process.env.NVCC ?? 'nvcc', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** An NVIDIA GPU is visible here. */
export function hasGpu(): boolean {
  if (existsSync('/dev/nvidia0')) return true;
  try {
    execFileSync('nvidia-smi', ['-L'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
