import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import type { SourceFile } from '../emit/render.js';
import { BuildError } from './errors.js';

/**
 * The build cache: one directory per specialization key and source hash, holding the sources,
 * the library and a manifest. An entry is built in a temporary directory and renamed into place
 * only when complete, so an interrupted build never leaves an entry that looks finished.
 */
export interface CacheEntry {
  dir: string;
  library: string;
  manifest: string;
}

export function defaultCacheRoot(): string {
  if (process.env.MISTRAL_COMPILE_CACHE) return process.env.MISTRAL_COMPILE_CACHE;
  const xdg = process.env.XDG_CACHE_HOME && process.env.XDG_CACHE_HOME !== '' ? process.env.XDG_CACHE_HOME : join(homedir(), '.cache');
  return join(xdg, 'mistral-compile');
}

export function cacheEntry(root: string, key: string, hash: string): CacheEntry {
  const short = hash.slice(0, 16);
  const dir = join(root, key, short);
  // A new file name per build: dlopen of a path already loaded would return the old code.
  return { dir, library: join(dir, `lib${key}.${short}.so`), manifest: join(dir, 'build.json') };
}

/** A complete entry: its manifest (written last) names this hash and its library exists. */
export function isComplete(entry: CacheEntry, hash: string): boolean {
  try {
    const manifest = JSON.parse(readFileSync(entry.manifest, 'utf8')) as { hash?: string };
    return manifest.hash === hash && existsSync(entry.library);
  } catch {
    return false;
  }
}

export function writeSources(dir: string, files: SourceFile[]): void {
  for (const f of files) {
    const path = join(dir, f.path);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, f.content);
  }
}

/** A staging directory older than this whose process is gone is a leftover (an interrupted build). */
export const STALE_STAGING_MS = 60 * 60 * 1000;

/**
 * Removes the staging directories that interrupted builds (Ctrl-C, a kill) left beside this entry,
 * of any source hash of its key: those whose process no longer runs here and that are over an hour
 * old. The age also spares a live build of another host sharing the cache (its process id means
 * nothing here).
 */
export function removeStaleStaging(entry: CacheEntry, now = Date.now()): void {
  let names: string[];
  try {
    names = readdirSync(dirname(entry.dir));
  } catch {
    return;  // no key directory yet: nothing left behind
  }
  for (const name of names) {
    const m = /^[0-9a-f]{16}\.partial-(\d+)-\d+$/.exec(name);
    if (m === null || processRuns(Number(m[1]))) continue;
    const path = join(dirname(entry.dir), name);
    try {
      if (now - statSync(path).mtimeMs > STALE_STAGING_MS) rmSync(path, { recursive: true, force: true });
    } catch {
      // gone already (another build swept it), or not ours to remove: either way, not this build's concern
    }
  }
}

function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';  // runs, as another user
  }
}

/** A fresh scratch directory beside the entry, on the same file system so the final rename is atomic. */
export function stagingDir(entry: CacheEntry): string {
  removeStaleStaging(entry);
  const dir = `${entry.dir}.partial-${process.pid}-${Date.now()}`;
  try {
    mkdirSync(dir, { recursive: true });
  } catch (err) {
    throw new BuildError(dirname(entry.dir), undefined, `cannot create the build directory (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
      'make it writable, or choose another with --cache DIR or $MISTRAL_COMPILE_CACHE');
  }
  return dir;
}

/** Moves a finished staging directory into place; if another process won the race, keeps theirs. */
export function commitStaging(staging: string, entry: CacheEntry, hash: string): void {
  if (isComplete(entry, hash)) {
    rmSync(staging, { recursive: true, force: true });
    return;
  }
  rmSync(entry.dir, { recursive: true, force: true }); // an incomplete leftover, never trusted
  renameSync(staging, entry.dir);
}
