import { randomBytes } from 'node:crypto';
import { unlinkSync } from 'node:fs';
import { open, rename, rm, unlink } from 'node:fs/promises';
import { makeDirs } from '../make-dirs.js';
import { onTerminatingSignal } from '../on-signal.js';
import { basename, dirname, join } from 'node:path';
import { WeightsError } from './errors.js';

/**
 * File-system steps of writing a model directory, each turning an errno into the project's
 * one-line WeightsError (the file, the problem, the fix) instead of an "internal error".
 */

/** The usual fix: most write failures are cured by writing somewhere else. */
export const FIX_OUT = 'pass another --out (a directory you can write to, with room for the checkpoint)';

/** errno codes a user can cause, in words; anything else is shown by its code alone. */
const REASONS: Record<string, string> = {
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'the file system is read-only',
  ENOSPC: 'no space left on the device',
  EDQUOT: 'the disk quota is exceeded',
  EFBIG: 'the file is larger than the file system allows',
  ENOTDIR: 'a parent in the path is a file, not a directory',
  EEXIST: 'it already exists',
  EISDIR: 'it is a directory',
  ENAMETOOLONG: 'the name is too long',
  ELOOP: 'the path has too many symbolic links',
  EIO: 'an I/O error',
};

export function errnoCode(err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/**
 * `path: <what> (<code>: <reason>); <fix>` for an errno error; any other error (a bug, not the
 * file system) is returned as it is, so it still reaches the user as an internal error.
 */
export function fileError(path: string, what: string, err: unknown, fix = FIX_OUT): unknown {
  if (err instanceof WeightsError) return err;
  const code = errnoCode(err);
  if (code === undefined) return err;
  const reason = REASONS[code];
  const space = code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG';
  return new WeightsError(path, undefined, `${what} (${reason === undefined ? code : `${code}: ${reason}`})`,
    space ? 'free some space, or pass another --out on a disk with room for the checkpoint' : fix);
}

/** Creates `dir` and its parents; an --out that is a file or cannot be made is one line, not a stack. */
export async function makeOutDir(dir: string): Promise<void> {
  try {
    makeDirs(dir);
  } catch (err) {
    // mkdir -p reports an existing non-directory as EEXIST, which reads as nonsense on its own.
    if (errnoCode(err) === 'EEXIST') throw new WeightsError(dir, undefined, 'is a file, not a directory', 'pass a directory to --out (it is created if missing)');
    throw fileError(dir, 'cannot be created as the output directory', err);
  }
}

/**
 * A fresh, empty temporary file beside `finalPath` (same directory, so that rename() is atomic and
 * never crosses file systems). 'wx' fails rather than truncate anything already there. Hidden and
 * suffixed with .tmp, so that an interrupted run's leftover is recognisably not a checkpoint.
 */
export async function createTempBeside(finalPath: string): Promise<string> {
  const temp = join(dirname(finalPath), `.${basename(finalPath)}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`);
  try {
    await (await open(temp, 'wx')).close();
  } catch (err) {
    throw fileError(finalPath, 'cannot be written: a temporary file beside it cannot be created', err);
  }
  return temp;
}

/** Writes `text` to `path` (an existing file made by createTempBeside) and fsyncs it before rename() publishes it. */
export async function writeDurably(path: string, text: string, shownAs: string): Promise<void> {
  try {
    const handle = await open(path, 'w');
    try {
      await handle.writeFile(text);
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch (err) {
    throw fileError(shownAs, 'cannot be written', err);
  }
}

/** Atomically puts `temp` at `finalPath`, replacing what is there. */
export async function publish(temp: string, finalPath: string): Promise<void> {
  try {
    await rename(temp, finalPath);
  } catch (err) {
    throw fileError(finalPath, 'cannot be replaced', err, `remove or rename ${finalPath} yourself, or ${FIX_OUT}`);
  }
}

/** Removes `path` if present. */
export async function removeIfPresent(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return;
    throw fileError(path, 'cannot be removed before it is rewritten', err, `remove or rename ${path} yourself, or ${FIX_OUT}`);
  }
}

/**
 * While the returned function is not called: on SIGINT, SIGTERM or SIGHUP, removes the files
 * `temps` holds then (a temporary checkpoint is as large as the model: an interrupted run left
 * gigabytes of hidden files), and ends the process by the same signal, as it would have ended.
 */
export function removeOnSignal(temps: readonly string[]): () => void {
  return onTerminatingSignal(() => {
    for (const path of temps) {
      try {
        unlinkSync(path);
      } catch {
        // gone already, or never created
      }
    }
  });
}

/** Cleanup after a failure: never throws, so the failure that caused it is the one reported. */
export async function removeQuietly(path: string): Promise<void> {
  await rm(path, { force: true }).catch(() => undefined);
}

/**
 * fsync of the directory, so that unlinks and renames reach the disk in the order they were made
 * (a power loss then cannot show the later step without the earlier). Best effort: some file
 * systems and platforms refuse to open or sync a directory, and the files themselves are synced.
 */
export async function syncDirectory(dir: string): Promise<void> {
  try {
    const handle = await open(dir, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch {
    // not supported here; the renames are still atomic, only their durability order is not forced
  }
}
