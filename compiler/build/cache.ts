import { closeSync, fsyncSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { makeDirs } from '../make-dirs.js';
import { homedir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import type { SourceFile } from '../emit/render.js';
import { BuildError } from './errors.js';
import { processRuns } from '../processes.js';

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

/** The same entry's files in another directory: its staging directory, or one moved aside. */
export function entryIn(entry: CacheEntry, dir: string): CacheEntry {
  return { dir, library: join(dir, basename(entry.library)), manifest: join(dir, basename(entry.manifest)) };
}

/**
 * A complete entry: its manifest (written last) names this hash, and its library has the size the
 * manifest recorded (a library cut short, by a full disk or by hand, crashed dlopen with a bus
 * error; it is rebuilt instead). Manifests from before library_bytes only need the library to exist.
 */
export function isComplete(entry: CacheEntry, hash: string): boolean {
  try {
    const manifest = JSON.parse(readFileSync(entry.manifest, 'utf8')) as { hash?: string; library_bytes?: number };
    return manifest.hash === hash && (manifest.library_bytes === undefined ? statSync(entry.library).isFile() : statSync(entry.library).size === manifest.library_bytes);
  } catch {
    return false;
  }
}

/** Flushes a file to disk, so that an entry renamed into place after a crash is never one of empty files. */
export function syncFile(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export function writeSources(dir: string, files: SourceFile[]): void {
  for (const f of files) {
    const path = join(dir, f.path);
    makeDirs(dirname(path));
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
    const m = /^[0-9a-f]{16}\.(?:partial|stale)-(\d+)-\d+$/.exec(name);
    if (m === null || processRuns(Number(m[1]))) continue;
    const path = join(dirname(entry.dir), name);
    try {
      if (now - statSync(path).mtimeMs > STALE_STAGING_MS) rmSync(path, { recursive: true, force: true });
    } catch {
      // gone already (another build swept it), or not ours to remove: either way, not this build's concern
    }
  }
}

/** A fresh scratch directory beside the entry, on the same file system so the final rename is atomic. */
export function stagingDir(entry: CacheEntry): string {
  removeStaleStaging(entry);
  const dir = `${entry.dir}.partial-${process.pid}-${Date.now()}`;
  try {
    makeDirs(dir);
  } catch (err) {
    throw new BuildError(dirname(entry.dir), undefined, `cannot create the build directory (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
      'make it writable, or choose another with --cache DIR or $MISTRAL_COMPILE_CACHE');
  }
  return dir;
}

/**
 * Moves a finished staging directory into place. The rename comes first: a directory already
 * there makes it fail (ENOTEMPTY), and then either another build finished the same entry (its
 * entry is kept, ours dropped) or an interrupted one left it (moved aside and removed, then
 * renamed again; an entry finished meanwhile and moved aside by mistake goes back). Checking first
 * and then removing could delete an entry another process had just renamed in and was about to load.
 */
export function commitStaging(staging: string, entry: CacheEntry, hash: string): void {
  for (let attempt = 0; ; attempt++) {
    try {
      renameSync(staging, entry.dir);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if ((code !== 'ENOTEMPTY' && code !== 'EEXIST') || attempt === 3) throw err;
    }
    if (isComplete(entry, hash)) {
      rmSync(staging, { recursive: true, force: true });
      return;
    }
    const aside = `${entry.dir}.stale-${process.pid}-${Date.now()}`;
    try {
      renameSync(entry.dir, aside);  // atomic: nobody loads from a directory being removed
    } catch {
      continue;  // moved by another build already
    }
    // Another build may have committed between the check and the move: then what was moved is its
    // finished entry, which goes back (or, if a third got in meanwhile, is dropped).
    if (isComplete(entryIn(entry, aside), hash)) {
      try {
        renameSync(aside, entry.dir);
        rmSync(staging, { recursive: true, force: true });
        return;
      } catch {
        // a finished entry is in place again: the next round keeps it
      }
    }
    rmSync(aside, { recursive: true, force: true });
  }
}
