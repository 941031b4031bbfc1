import { mkdirSync, statSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * mkdir -p, one level at a time. Node's recursive mkdirSync loops forever, at full CPU, where a
 * parent exists but creating a directory in it fails with ENOENT, as under /proc: a --cache or
 * --out there hung. Here that ENOENT is thrown once the parent is known to exist. An existing
 * non-directory is EEXIST, as from mkdirSync.
 */
export function makeDirs(dir: string): void {
  if (makeOne(dir)) return;
  const parent = dirname(dir);
  if (parent !== dir) makeDirs(parent);
  if (!makeOne(dir)) mkdirSync(dir);  // ENOENT with the parent there: thrown, not retried
}

/** Creates dir (true), finds it there already (true), or finds its parent missing (false). */
function makeOne(dir: string): boolean {
  try {
    mkdirSync(dir);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' && statSync(dir).isDirectory()) return true;  // also another process's, made meanwhile
    if (code === 'ENOENT') return false;
    throw err;
  }
}
