/**
 * Runs only under test/asan/run.sh: proves the run is what it claims to be. The addon this process
 * loads is the instrumented one, libasan is in the process, and a memory error in instrumented
 * code ends the process with ASan's report (so a bug in the addon fails the run, not just logs).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { loadNativeAddon, nativeAddonPath } from '../../runtime/native-loader.js';

const dir = mkdtempSync(join(tmpdir(), 'mc-asan-live-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the AddressSanitizer run', () => {
  it('has libasan in the process and loads an instrumented addon', () => {
    loadNativeAddon();
    const maps = readFileSync('/proc/self/maps', 'utf8');
    expect(maps).toMatch(/libasan\.so/);
    expect(maps).toContain('mc_runtime.node');
    expect(readFileSync(nativeAddonPath()).includes('__asan_report_load')).toBe(true);
  });

  it('ends a process whose instrumented code overflows a heap buffer, with ASan\'s report', async () => {
    const source = join(dir, 'overflow.cpp');
    writeFileSync(source, [
      '#include <cstdlib>',
      'volatile int sink;',
      '__attribute__((constructor)) static void overflow() {',
      '  int* p = static_cast<int*>(std::malloc(4 * sizeof(int)));',
      '  sink = p[4];  // one past the end',
      '  std::free(p);',
      '}',
    ].join('\n'));
    const library = join(dir, 'overflow.so');
    await execa('g++', ['-shared', '-fPIC', '-fsanitize=address', '-O0', source, '-o', library]);
    const child = await execa(process.execPath, ['-e', `try { process.dlopen({ exports: {} }, ${JSON.stringify(library)}); } catch {} console.log('survived');`],
      { reject: false, all: true });
    expect(child.all).toContain('AddressSanitizer: heap-buffer-overflow');
    expect(child.stdout).not.toContain('survived');
    expect(child.exitCode === 0).toBe(false);
  });
});
