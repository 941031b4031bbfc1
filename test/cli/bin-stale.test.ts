/**
 * bin/mistral-compile.js in a checkout: a dist/ older than the TypeScript sources (a pull without
 * `npm run build`) or missing is named in one line, instead of running old code against new templates.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../../compiler/paths.js';

const dir = mkdtempSync(join(tmpdir(), 'mc-bin-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A checkout in miniature: the real bin, a dist/ whose main() prints "ran", one source file. */
function checkout(name: string, sourceAge: 'older' | 'newer' | 'no dist'): string {
  const root = join(dir, name);
  mkdirSync(join(root, 'bin'), { recursive: true });
  mkdirSync(join(root, 'compiler', 'cli'), { recursive: true });
  copyFileSync(join(packageRoot(), 'bin', 'mistral-compile.js'), join(root, 'bin', 'mistral-compile.js'));
  writeFileSync(join(root, 'package.json'), '{"type": "module"}');
  writeFileSync(join(root, 'compiler', 'cli', 'main.ts'), 'export {};\n');
  if (sourceAge !== 'no dist') {
    mkdirSync(join(root, 'dist', 'compiler', 'cli'), { recursive: true });
    writeFileSync(join(root, 'dist', 'compiler', 'cli', 'main.js'), 'export async function main() { console.log("ran"); return 0; }\n');
    const now = Date.now() / 1000;
    utimesSync(join(root, 'compiler', 'cli', 'main.ts'), now + (sourceAge === 'newer' ? 60 : -60), now + (sourceAge === 'newer' ? 60 : -60));
  }
  return root;
}
const run = (root: string) => spawnSync(process.execPath, [join(root, 'bin', 'mistral-compile.js')], { encoding: 'utf8' });

describe('bin/mistral-compile.js', () => {
  it('runs dist/ when it is newer than the sources', () => {
    expect(execFileSync(process.execPath, [join(checkout('fresh', 'older'), 'bin', 'mistral-compile.js')], { encoding: 'utf8' })).toBe('ran\n');
  });

  it('names a source newer than dist/ and the fix, in one line, exit 1', () => {
    const r = run(checkout('stale', 'newer'));
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('mistral-compile: error: dist/ is older than compiler/cli/main.ts; run npm run build\n');
  });

  it('says dist/ is not built when it is missing', () => {
    const r = run(checkout('unbuilt', 'no dist'));
    expect(r.status).toBe(1);
    expect(r.stderr).toBe('mistral-compile: error: dist/ is not built; run npm run build (npm ci runs it)\n');
  });
});
