/**
 * The runtime addon not built (an install whose install script did not run, a checkout before
 * npm run build:addon): a BuildError naming the file, with the fix that works where the package is,
 * not an internal error. Run on a copy of the built loader in a package of its own without the addon.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../../compiler/paths.js';

const dir = mkdtempSync(join(tmpdir(), 'mc-addon-missing-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A package holding dist/ (the compiled loader and what it imports), and compiler/ where it is a checkout. */
function pkg(name: string, checkout: boolean): string {
  const root = join(dir, name);
  mkdirSync(root, { recursive: true });
  writeFileSync(join(root, 'package.json'), '{"type": "module"}');
  cpSync(join(packageRoot(), 'dist'), join(root, 'dist'), { recursive: true });
  if (checkout) mkdirSync(join(root, 'compiler'));
  return root;
}

function load(root: string): { name: string; message: string } {
  const script = `import { loadNativeAddon } from ${JSON.stringify(join(root, 'dist', 'runtime', 'native-loader.js'))};
    try { loadNativeAddon(); } catch (e) { console.log(JSON.stringify({ name: e.name, message: e.message })); }`;
  return JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' })) as { name: string; message: string };
}

describe('the runtime addon not built', () => {
  it('installed as a dependency: a BuildError whose fix is npm rebuild from the user\'s project', () => {
    const root = pkg('installed', false);
    expect(load(root)).toEqual({ name: 'BuildError', message: `${join(root, 'runtime/addon/build/Release/mc_runtime.node')}: is missing: the runtime addon is not built; run npm rebuild mistral-compile in your project (it needs cmake and g++)` });
  });

  it('in a checkout: the package\'s own script', () => {
    expect(load(pkg('checkout', true)).message).toMatch(/: is missing: the runtime addon is not built; run npm run build:addon \(npm ci runs it; it needs cmake and g\+\+\)$/);
  });
});
