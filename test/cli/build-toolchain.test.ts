/** What `build` says when the compiler it needs cannot be run (compiler/build/toolchain.ts). */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { main } from '../../compiler/cli/main.js';

const MODEL = join(import.meta.dirname, '../../configs/models/tiny-dense');
const saved = { CXX: process.env.CXX, NVCC: process.env.NVCC };

async function build(env: { CXX?: string; NVCC?: string }, ...argv: string[]) {
  for (const [name, value] of Object.entries(env)) process.env[name] = value;
  const err: string[] = [];
  vi.spyOn(console, 'log').mockImplementation(() => undefined);
  vi.spyOn(console, 'error').mockImplementation((...a) => void err.push(a.join(' ')));
  const code = await main(['build', MODEL, '--cache', mkdtempSync(join(tmpdir(), 'mc-cli-toolchain-')), '--json', ...argv]);
  return { code, err: err.join('\n') };
}

afterEach(() => {
  vi.restoreAllMocks();
  for (const [name, value] of Object.entries(saved)) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
});

describe('a compiler that cannot be run', () => {
  it('for --target cuda names $NVCC and its value, not g++ and $CXX', async () => {
    const r = await build({ NVCC: '/nonexistent' }, '--target', 'cuda');
    expect(r.code).toBe(1);
    expect(r.err).toBe('mistral-compile: error: $NVCC=/nonexistent: no such file; point $NVCC at nvcc, or unset it to use nvcc on PATH');
  });

  it('for the cpu target names $CXX and its value, even when the path holds "nvcc"', async () => {
    const r = await build({ CXX: '/nonexistent/nvcc-era/g++' });
    expect(r.code).toBe(1);
    expect(r.err).toBe('mistral-compile: error: $CXX=/nonexistent/nvcc-era/g++: no such file; point $CXX at a C++20 compiler, or unset it to use g++ on PATH');
  });

  for (const cxx of ['ccache g++', 'g++ -O0']) {
    it(`says that $CXX must be one executable when it is a command with arguments ("${cxx}")`, async () => {
      const r = await build({ CXX: cxx });
      expect(r.code).toBe(1);
      expect(r.err).toMatch(new RegExp(`^mistral-compile: error: \\$CXX=${JSON.stringify(cxx).replace(/[+]/g, '\\+')}: is a command with arguments, but \\$CXX must be a single executable`));
      expect(r.err).not.toMatch(/not found on PATH/);
    });
  }
});
