/**
 * probeCudaDriver (runtime/addon/src/cuda_probe.cpp), what `--target cuda` asks before it builds:
 * against this machine (no driver) and a stand-in libcuda.so.1 whose cuInit and cuDeviceGetCount
 * answer as the environment says, found through LD_LIBRARY_PATH by a child process.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadNativeAddon, nativeAddonPath } from '../../runtime/native-loader.js';
import { packageRoot } from '../../compiler/paths.js';
import { hasCudaDriver } from '../cuda/helpers.js';
import { writeModelDir } from '../e2e/helpers.js';

const FAKE_DRIVER = `
#include <cstdlib>
extern "C" int cuInit(unsigned) { const char* e = std::getenv("FAKE_CU_INIT"); return e ? std::atoi(e) : 0; }
extern "C" int cuDeviceGetCount(int* n) { const char* e = std::getenv("FAKE_CU_COUNT"); *n = e ? std::atoi(e) : 1; return 0; }
extern "C" int cuGetErrorName(int code, const char** s) { if (code != 100) return 1; *s = "CUDA_ERROR_NO_DEVICE"; return 0; }
`;

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'mc-cuda-probe-'));
  writeFileSync(join(dir, 'fake.cpp'), FAKE_DRIVER);
  execFileSync('g++', ['-shared', '-fPIC', '-o', join(dir, 'libcuda.so.1'), join(dir, 'fake.cpp')]);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The probe's answer in a fresh process that finds the stand-in driver first. */
function probeWith(env: Record<string, string>): string | null {
  const script = `process.stdout.write(JSON.stringify(require(${JSON.stringify(nativeAddonPath())}).probeCudaDriver()))`;
  const out = execFileSync(process.execPath, ['-e', script], { env: { ...process.env, LD_LIBRARY_PATH: dir, ...env }, encoding: 'utf8' });
  return JSON.parse(out) as string | null;
}

describe('probeCudaDriver', () => {
  it.skipIf(hasCudaDriver())('here (no driver): names libcuda.so.1 and why it cannot be loaded', () => {
    expect(loadNativeAddon().probeCudaDriver()).toBe("the NVIDIA driver's libcuda.so.1 cannot be loaded (libcuda.so.1: cannot open shared object file: No such file or directory)");
  });

  it('a driver that sees a GPU: null (go on and build)', () => {
    expect(probeWith({})).toBeNull();
    expect(probeWith({ FAKE_CU_COUNT: '8' })).toBeNull();
  });

  it('cuInit failing: its code and, where the driver names it, the name; CUDA_VISIBLE_DEVICES named where it hid the GPUs', () => {
    expect(probeWith({ FAKE_CU_INIT: '100' })).toBe('cuInit returned 100 (CUDA_ERROR_NO_DEVICE)');
    expect(probeWith({ FAKE_CU_INIT: '100', CUDA_VISIBLE_DEVICES: '' })).toBe('cuInit returned 100 (CUDA_ERROR_NO_DEVICE); CUDA_VISIBLE_DEVICES="" may hide them');
    expect(probeWith({ FAKE_CU_INIT: '999', CUDA_VISIBLE_DEVICES: '0' })).toBe('cuInit returned 999');
  });

  it('a driver that lists no GPU', () => {
    expect(probeWith({ FAKE_CU_COUNT: '0' })).toBe('the driver lists no GPU (cuDeviceGetCount gave 0)');
  });

  it('loadModel tells "no CUDA device" from a driver that cannot be initialised, before building', async () => {
    const model = await writeModelDir(dir, 'tiny', { shipped: 'tiny-dense' }, { seed: 1, dtype: 'bf16' });
    const script = `import { loadModel } from ${JSON.stringify(join(packageRoot(), 'runtime/model.ts'))};
      await loadModel(${JSON.stringify(model.dir)}, { target: 'cuda', cacheDir: ${JSON.stringify(join(dir, 'cache'))} }).catch((e) => console.log(e.message));`;
    writeFileSync(join(dir, 'load.mts'), script);
    const load = (env: Record<string, string>) => execFileSync(process.execPath, ['--import', 'tsx', join(dir, 'load.mts')],
      { cwd: packageRoot(), env: { ...process.env, LD_LIBRARY_PATH: dir, ...env }, encoding: 'utf8' }).trim();
    expect(load({ FAKE_CU_INIT: '100', CUDA_VISIBLE_DEVICES: '' })).toBe('--target cuda: no CUDA device: cuInit returned 100 (CUDA_ERROR_NO_DEVICE); CUDA_VISIBLE_DEVICES="" may hide them; run where an NVIDIA GPU and its driver are visible (nvidia-smi lists it), or use --target cpu');
    expect(load({ FAKE_CU_INIT: '804' })).toBe('--target cuda: the NVIDIA driver cannot be initialised: cuInit returned 804; check the driver (nvidia-smi; after a suspend, reload it), or use --target cpu');
    expect(existsSync(join(dir, 'cache'))).toBe(false);  // nothing was built
  }, 60_000);
});
