import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { loadNativeAddon } from '../../runtime/native-loader.js';

/** nvcc runs here (CI has nvcc 13 and no GPU). */
export function hasNvcc(): boolean {
  try {
    execFileSync(process.env.NVCC ?? 'nvcc', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** The NVIDIA driver's library (libcuda.so.1) loads here, GPU or not (the addon's probe says otherwise where it does not). */
export function hasCudaDriver(): boolean {
  return !/libcuda\.so\.1 cannot be loaded/.test(loadNativeAddon().probeCudaDriver() ?? '');
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

/**
 * A counting semaphore: at most `slots` of the works handed to it run at once, whatever vitest's
 * own concurrency (CI machines have 2 cores; a test file's compilers and emulator runs share them).
 */
export function limiter(slots: number) {
  const waiting: Array<() => void> = [];
  return async <T>(work: () => Promise<T>): Promise<T> => {
    if (slots > 0) slots--;
    else await new Promise<void>((resolve) => waiting.push(resolve));
    try {
      return await work();
    } finally {
      const next = waiting.shift();
      if (next) next();
      else slots++;
    }
  };
}

/**
 * work() once per key, through `slot`: every caller of a key shares that one promise (a build that
 * several cases use; a rejection reaches each caller that awaits it, never as an unhandled one).
 */
export function oncePerKey<T>(slot: ReturnType<typeof limiter>) {
  const started = new Map<string, Promise<T>>();
  return (key: string, work: () => Promise<T>): Promise<T> => {
    let done = started.get(key);
    if (done === undefined) {
      done = slot(work);
      done.catch(() => {});
      started.set(key, done);
    }
    return done;
  };
}
