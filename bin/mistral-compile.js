#!/usr/bin/env node
// Entry point of the CLI; the compiled TypeScript lives in dist/ (built by `npm run build`, run by npm ci's prepare).
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const built = join(root, 'dist', 'compiler', 'cli', 'main.js');

/** The newest .ts file below `dir` (addon build output and node_modules aside), or undefined. */
function newestSource(dir) {
  let newest;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name === 'node_modules' || entry.name.startsWith('build')) continue;
      const inner = newestSource(path);
      if (inner !== undefined && (newest === undefined || inner.mtimeMs > newest.mtimeMs)) newest = inner;
    } else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) {
      const mtimeMs = statSync(path).mtimeMs;
      if (newest === undefined || mtimeMs > newest.mtimeMs) newest = { path, mtimeMs };
    }
  }
  return newest;
}

// In a checkout (the TypeScript sources beside dist/), a dist/ older than them runs yesterday's code
// against today's templates: say so instead of failing somewhere inside with an internal error.
if (!existsSync(built)) {
  console.error('mistral-compile: error: dist/ is not built; run npm run build (npm ci runs it)');
  process.exit(1);
}
if (existsSync(join(root, 'compiler'))) {
  const builtAt = statSync(built).mtimeMs;
  const newer = [join(root, 'compiler'), join(root, 'runtime')].filter((d) => existsSync(d)).map(newestSource)
    .find((s) => s !== undefined && s.mtimeMs > builtAt);
  if (newer !== undefined) {
    console.error(`mistral-compile: error: dist/ is older than ${relative(root, newer.path)}; run npm run build`);
    process.exit(1);
  }
}
const { main } = await import(pathToFileURL(built).href);
process.exitCode = await main(process.argv.slice(2));
