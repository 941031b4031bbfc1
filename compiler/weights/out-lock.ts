import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { link, open, readFile, stat, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { TERMINAL_UNSAFE } from '../errors.js';
import { processRuns } from '../processes.js';
import { WeightsError } from './errors.js';
import { createTempBeside, errnoCode, fileError, removeQuietly, writeDurably } from './output-files.js';

/**
 * The lock of a directory random-weights writes into (hidden, named for the command): two runs into
 * one --out could otherwise pair one's params.json with the other's weights.
 */
export const OUT_LOCK_NAME = '.random-weights.lock';

/** Tokens of the locks this process holds: a lock naming our own pid but not one of these is a dead run's. */
const held = new Set<string>();

/** link() is refused by some file systems (exFAT, FUSE mounts, SMB shares): then the lock is created in place. */
const NO_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EXDEV']);

/** A lock created in place is written a moment after it appears: until then it reads as empty, and counts as held. */
const FRESH_MS = 10_000;

/**
 * Tries to take the lock before giving up: each failed try saw the lock change hands (a dead one
 * removed, then taken by another run) or waited a moment for another run's takeover.
 */
const TAKEOVER_WAIT_MS = 20;
/** Enough waits to outlast a takeover guard until it counts as left by a killed run (FRESH_MS). */
const MAX_ATTEMPTS = FRESH_MS / TAKEOVER_WAIT_MS + 50;

/** A lock as read: its text and the file it was read from (a lock removed and put again is another inode). */
interface FoundLock {
  content: string;
  ino: number;
  mtimeMs: number;
}

export interface OutLock {
  path: string;
  /** Removes the lock if it is still ours (a run that wrongly took it over keeps its own). Never throws. */
  release(): Promise<void>;
}

/**
 * Takes `dir`'s lock, or refuses while another live run holds it. The lock names its holder
 * (`pid@host`, the boot and the process's start time, a random token) and is put in place by
 * link(), complete from the first moment. A lock whose holder is gone (a SIGKILL, a reboot, a pid
 * now used by another process; signals remove it) is taken over: removed by one run at a time
 * (`removeDead`), so that runs which find the same dead lock at once take it over one of them.
 */
export async function lockOutDir(dir: string): Promise<OutLock> {
  const path = join(dir, OUT_LOCK_NAME);
  const token = randomBytes(8).toString('hex');
  const content = `${process.pid}@${hostname()} boot=${bootId()} start=${startTime(process.pid)} token=${token}\n`;
  const temp = await createTempBeside(path);
  try {
    await writeDurably(temp, content, path);
    for (let attempt = 0; ; attempt++) {
      try {
        await put(temp, path, content);
        held.add(token);
        return { path, release: () => release(path, token) };
      } catch (err) {
        if (errnoCode(err) !== 'EEXIST') throw fileError(path, 'cannot be created to lock the output directory', err);
      }
      const found = await readLock(path);  // undefined: removed meanwhile
      const live = found === undefined ? false : await holderAlive(found);
      if (live !== false || attempt >= MAX_ATTEMPTS) {
        // The file is anyone's: what it says is shown escaped, as any value in a message.
        const name = (found?.content.trim().split(' ')[0]?.slice(0, 80) ?? '').replace(TERMINAL_UNSAFE, '?');
        const who = name === '' ? 'another run' : `another run (${name})`;
        throw new WeightsError(dir, undefined, `is being written by ${who}: its lock ${OUT_LOCK_NAME} is held`,
          `wait for it to finish, or pass another --out; if no run${live === 'unknown' ? ' on that host' : ''} is writing here, delete ${path}`);
      }
      if (found !== undefined) await removeDead(path, found);
    }
  } finally {
    await removeQuietly(temp);
  }
}

/** Puts the lock at `path` complete (link), or where links are refused, creates it exclusively and writes it. */
async function put(temp: string, path: string, content: string): Promise<void> {
  try {
    await link(temp, path);
  } catch (err) {
    if (!NO_LINKS.has(errnoCode(err) ?? '')) throw err;
    const handle = await open(path, 'wx');
    await handle.writeFile(content).finally(() => handle.close());
  }
}

async function release(path: string, token: string): Promise<void> {
  held.delete(token);
  const now = await readFile(path, 'utf8').catch(() => '');
  if (now.includes(`token=${token}`)) await removeQuietly(path);
}

/** The lock at `path` with the file it was read from, or undefined where there is none. */
async function readLock(path: string): Promise<FoundLock | undefined> {
  let handle;
  try {
    handle = await open(path, 'r');
    const { ino, mtimeMs } = await handle.stat();
    return { content: await handle.readFile('utf8'), ino, mtimeMs };
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw fileError(path, 'cannot be read to see who holds the output directory', err, `delete ${path} if no run is writing there`);
  } finally {
    await handle?.close();
  }
}

/**
 * Removes the dead lock `dead`, unless it has been replaced since it was read. Runs that found the
 * same dead lock could otherwise each remove it and put their own, the later removing the earlier's
 * live one: the removal is done under a second lock (`.takeover`, held for milliseconds), and
 * only while the lock is still the file that was judged dead. A run that finds `.takeover` held
 * waits a moment and looks again (it then finds the new holder's lock); one older than FRESH_MS was
 * left by a run killed in those milliseconds and is removed.
 */
async function removeDead(path: string, dead: FoundLock): Promise<void> {
  const guard = `${path}.takeover`;
  try {
    await (await open(guard, 'wx')).close();
  } catch (err) {
    if (errnoCode(err) !== 'EEXIST') throw fileError(guard, 'cannot be created to take over a lock left by a run that is gone', err, `delete ${path} yourself`);
    const age = await stat(guard).then((s) => Date.now() - s.mtimeMs, () => 0);
    if (age >= FRESH_MS) await removeQuietly(guard);
    else await new Promise((resolve) => setTimeout(resolve, TAKEOVER_WAIT_MS));
    return;
  }
  try {
    const now = await readLock(path);
    if (now === undefined || now.ino !== dead.ino || now.content !== dead.content) return;
    await unlink(path).catch((e: unknown) => {
      if (errnoCode(e) !== 'ENOENT') throw fileError(path, 'cannot be removed (a lock left by a run that is gone)', e, `delete ${path} yourself`);
    });
  } finally {
    await removeQuietly(guard);
  }
}

/** Whether the run a lock names still runs: 'unknown' for another host's (no way to ask it). */
async function holderAlive(found: FoundLock): Promise<boolean | 'unknown'> {
  const m = /^(\d+)@(\S+) boot=(\S*) start=(\S*) token=([0-9a-f]+)\n?$/.exec(found.content);
  if (m === null) {
    // Being written (a lock created in place), or not a lock of ours: wait for a fresh one only.
    return Date.now() - found.mtimeMs < FRESH_MS;
  }
  const [, pid, host, boot, start, token] = m;
  if (host !== hostname()) return 'unknown';
  if (boot !== '' && bootId() !== '' && boot !== bootId()) return false;  // written before a reboot
  if (Number(pid) === process.pid) return held.has(token!);             // ours only if this process took it
  if (!processRuns(Number(pid))) return false;
  // The pid runs: the same process only if it started when the lock says (else the pid was reused).
  const now = startTime(Number(pid));
  return start === '' || now === '' || now === start;
}

/** This boot's id (Linux), '' elsewhere. */
function bootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return '';
  }
}

/** A process's start time in clock ticks since boot (field 22 of /proc/PID/stat), '' where unknown. */
function startTime(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '';
  } catch {
    return '';
  }
}
