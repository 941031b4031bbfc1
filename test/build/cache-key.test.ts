/**
 * What keys the build cache beyond the sources and flags (compiler/build/toolchain.ts), and that a
 * cache path is never read by a shell: nvcc runs its link step through sh with the output path in
 * double quotes.
 */
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadModelConfig } from '../../compiler/config/load.js';
import { buildPlan } from '../../compiler/plan/build-plan.js';
import { hasNvcc } from '../cuda/helpers.js';

const config = loadModelConfig(join(import.meta.dirname, '../../configs/models/tiny-dense'));
const cpuPlan = buildPlan(config, { dtype: 'f32', maxTokens: 16 });
const cudaPlan = buildPlan(config, { target: 'cuda', dtype: 'bf16', maxTokens: 16 });
const VARIABLES = ['CXX', 'NVCC', 'CPATH', 'NVCC_PREPEND_FLAGS', 'NVCC_APPEND_FLAGS', 'NVCC_CCBIN', 'LANG', 'LC_ALL', 'FAKE_NATIVE'];
const saved = Object.fromEntries(VARIABLES.map((name) => [name, process.env[name]]));

let work: string;
beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'mc-cache-key-'));
});
afterAll(() => rmSync(work, { recursive: true, force: true }));
afterEach(() => {
  for (const name of VARIABLES) {
    if (saved[name] === undefined) delete process.env[name];
    else process.env[name] = saved[name];
  }
});

/**
 * A compiler that answers --version in German under a German locale (as g++ does with its
 * catalogs installed), prints FAKE_NATIVE as its -### expansion of -march=native, and "builds" by writing
 * its -o file.
 */
function fakeCompiler(name: string): string {
  const path = join(work, name);
  writeFileSync(path, `#!/bin/sh
if [ "$1" = "--version" ]; then case "\${LC_ALL:-\${LANG:-C}}" in de*) echo "fake 1.0 (Dies ist freie Software)";; *) echo "fake 1.0 (build 7)";; esac; echo "second line"; exit 0; fi
if [ "$1" = "-###" ]; then echo "cc1plus -march=\${FAKE_NATIVE:-znver4}" >&2; exit 0; fi
while [ $# -gt 0 ]; do [ "$1" = "-o" ] && { echo library > "$2"; }; shift; done
`);
  chmodSync(path, 0o755);
  return path;
}

async function hashOf(target: 'cpu' | 'cuda', env: Record<string, string>): Promise<string> {
  for (const [name, value] of Object.entries(env)) process.env[name] = value;
  try {
    // A fresh module each time: toolchain.ts keeps each compiler's identity for the process's life.
    vi.resetModules();
    const { buildPlanLibrary } = await import('../../compiler/build/build.js');
    return (await buildPlanLibrary(target === 'cpu' ? cpuPlan : cudaPlan, { cacheDir: join(work, 'cache') })).hash;
  } finally {
    for (const name of Object.keys(env)) {
      if (saved[name] === undefined) delete process.env[name];
      else process.env[name] = saved[name];
    }
  }
}

describe('the cache key', () => {
  it('holds the variables that change nvcc\'s output (its extra flags, its host compiler), each value its own key', async () => {
    const nvcc = fakeCompiler('nvcc');
    const base = await hashOf('cuda', { NVCC: nvcc });
    const keyed = [
      await hashOf('cuda', { NVCC: nvcc, NVCC_PREPEND_FLAGS: '-G' }),
      await hashOf('cuda', { NVCC: nvcc, NVCC_APPEND_FLAGS: '-G' }),
      await hashOf('cuda', { NVCC: nvcc, NVCC_CCBIN: fakeCompiler('host-g++') }),
      await hashOf('cuda', { NVCC: nvcc, CPATH: '/opt/other/include' }),
    ];
    expect(new Set([base, ...keyed]).size).toBe(5);
    // A -ccbin inside the flags names the host compiler too: its version keys the cache, not the flag's text alone.
    const hostA = fakeCompiler('host-a'), hostB = fakeCompiler('host-b');
    writeFileSync(hostB, readFileSync(hostB, 'utf8').replace('fake 1.0 (build 7)', 'fake 2.0 (build 9)'));
    const viaFlags = await hashOf('cuda', { NVCC: nvcc, NVCC_PREPEND_FLAGS: `-ccbin ${hostA}` });
    copyFileSync(hostB, hostA);  // the same path, another compiler (an upgrade in place)
    expect(await hashOf('cuda', { NVCC: nvcc, NVCC_PREPEND_FLAGS: `-ccbin ${hostA}` })).not.toBe(viaFlags);
    expect(await hashOf('cuda', { NVCC: nvcc })).toBe(base);
  });

  it('holds GCC\'s search paths for a CPU build, and not nvcc\'s variables', async () => {
    const cxx = fakeCompiler('g++');
    const base = await hashOf('cpu', { CXX: cxx });
    expect(await hashOf('cpu', { CXX: cxx, CPATH: '/opt/other/include' })).not.toBe(base);
    expect(await hashOf('cpu', { CXX: cxx, NVCC_APPEND_FLAGS: '-G' })).toBe(base);
  });

  it('holds what the compiler makes of -march=native, not /proc/cpuinfo\'s other flags', async () => {
    const cxx = fakeCompiler('g++');
    const znver4 = await hashOf('cpu', { CXX: cxx, FAKE_NATIVE: 'znver4' });
    expect(await hashOf('cpu', { CXX: cxx, FAKE_NATIVE: 'znver5' })).not.toBe(znver4);
    expect(await hashOf('cpu', { CXX: cxx, FAKE_NATIVE: 'znver4' })).toBe(znver4);
  });

  it('does not follow the locale (a translated --version rebuilt everything)', async () => {
    const cxx = fakeCompiler('g++');
    const c = await hashOf('cpu', { CXX: cxx, LANG: 'C.UTF-8' });
    expect(await hashOf('cpu', { CXX: cxx, LANG: 'de_DE.UTF-8' })).toBe(c);
    expect(await hashOf('cpu', { CXX: cxx, LC_ALL: 'de_DE.UTF-8' })).toBe(c);
  });

  it('build.json names the compiler by its first --version line', async () => {
    process.env.CXX = fakeCompiler('g++');
    const { buildPlanLibrary } = await import('../../compiler/build/build.js');
    const built = await buildPlanLibrary(cpuPlan, { cacheDir: join(work, 'cache') });
    expect(JSON.parse(readFileSync(join(built.sourceDir, 'build.json'), 'utf8')).toolchain).toBe('fake 1.0 (build 7)');
  });
});

describe.skipIf(!hasNvcc())('a cache path with shell syntax in it', () => {
  it('is never run by nvcc\'s shell: `$(...)` runs nothing, `"` breaks nothing', async () => {
    // The real nvcc, on a two-line kernel instead of the model (seconds, not minutes): its link step is what reads -o.
    const wrapper = join(work, 'nvcc-small');
    writeFileSync(join(work, 'small.cu'), '__global__ void k(float* x) { x[threadIdx.x] = 1.0f; }\nextern "C" int mc_small() { return 1; }\n');
    writeFileSync(wrapper, `#!/bin/sh\n[ "$1" = "--version" ] && exec "\${REAL_NVCC:-nvcc}" --version\nfor a; do shift; [ "$a" = model.cu ] && a="${join(work, 'small.cu')}"; set -- "$@" "$a"; done\nexec "\${REAL_NVCC:-nvcc}" "$@"\n`);
    chmodSync(wrapper, 0o755);
    const marker = join(work, 'ran');
    const cacheDir = join(work, `cache $(touch ${marker}) "quoted" \`touch ${marker}\``);
    process.env.NVCC = wrapper;
    const { buildPlanLibrary } = await import('../../compiler/build/build.js');
    const built = await buildPlanLibrary(cudaPlan, { cacheDir, archs: ['sm_80'] });
    expect(existsSync(built.library)).toBe(true);
    expect(built.library.startsWith(cacheDir)).toBe(true);
    expect(existsSync(marker)).toBe(false);
  }, 120_000);
});
