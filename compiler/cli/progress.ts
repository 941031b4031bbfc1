import type { LoadProgress } from '../../runtime/model.js';
import { formatBytes } from './format.js';

/**
 * Progress of long work (compiling kernels, loading weights, writing weights) on stderr, so that
 * stdout stays clean for results. Silent with --json.
 */
/** Every running ticker, so that an error line is never followed by one more tick. */
const tickers = new Set<NodeJS.Timeout>();

/** Stops every ticker (the CLI calls it before it prints an error). */
export function stopTickers(): void {
  for (const t of tickers) clearInterval(t);
  tickers.clear();
}

export class Progress {
  private readonly tty = Boolean(process.stderr.isTTY);
  private lastWrite = 0;
  private open = false;
  private ticker: NodeJS.Timeout | undefined;

  /**
   * prefix: put in front of every line, e.g. "[rank 1] " when several processes (one per rank)
   * write to one terminal or log.
   */
  constructor(private readonly quiet: boolean, private readonly prefix = '') {}

  /** A finished step: its own line. */
  line(text: string): void {
    this.stopTicker();
    if (this.quiet) return;
    this.clear();
    process.stderr.write(`${this.prefix}${text}\n`);
  }

  /** A step under way: rewritten in place on a terminal, throttled to a few lines elsewhere. */
  update(text: string, fraction: number): void {
    if (this.quiet) return;
    const now = performance.now();
    if (this.tty) {
      if (now - this.lastWrite < 50 && fraction < 1) return;
      process.stderr.write(`\r\x1b[K${this.prefix}${text} ${(fraction * 100).toFixed(0)}%`);
      this.open = true;
    } else if (now - this.lastWrite > 2000 || fraction >= 1) {
      process.stderr.write(`${this.prefix}${text} ${(fraction * 100).toFixed(0)}%\n`);
    } else return;
    this.lastWrite = now;
  }

  /**
   * Work of unknown length under way (a compiler: nvcc takes minutes for a large model): its elapsed
   * seconds, rewritten in place each second on a terminal, a line every 30 s elsewhere, until the
   * next line. The timer does not keep the process alive.
   */
  elapsed(text: string, periodMs = 1000): void {
    this.stopTicker();
    if (this.quiet) return;
    const started = performance.now();
    let lines = 0;
    this.ticker = setInterval(() => {
      const seconds = Math.round((performance.now() - started) / 1000);
      if (this.tty) {
        process.stderr.write(`\r\x1b[K${this.prefix}${text} ${seconds} s`);
        this.open = true;
      } else if ((performance.now() - started) / 30_000 >= lines + 1) {
        lines += 1;
        process.stderr.write(`${this.prefix}${text} ${seconds} s\n`);
      }
    }, periodMs);
    this.ticker.unref();
    tickers.add(this.ticker);
  }

  private stopTicker(): void {
    if (this.ticker === undefined) return;
    clearInterval(this.ticker);
    tickers.delete(this.ticker);
    this.ticker = undefined;
  }

  clear(): void {
    if (this.open) process.stderr.write('\r\x1b[K');
    this.open = false;
  }

  /**
   * What normalizing the config decided for the user (a default chosen, keys ignored), one "note:"
   * line each: an ignored key may be one that changes the numbers. With --json they go in the result's
   * "notes" instead.
   */
  notes(notes: readonly string[]): void {
    for (const note of notes) this.line(`note: ${note}`);
  }

  /** The loader's and builder's events as lines. */
  onLoad = (e: LoadProgress): void => {
    switch (e.stage) {
      case 'config':
        return this.notes(e.notes);
      case 'render':
        return this.line(`rendering ${e.key}`);
      case 'compile':
        this.line(`compiling ${e.key}: ${e.files} files with ${e.compiler}`);
        return this.elapsed(`compiling ${e.key}:`);
      case 'cached':
        return this.line(`cached ${e.key}`);
      case 'done':
        return this.line(`built ${e.key} in ${e.seconds.toFixed(2)} s: ${e.library}`);
      case 'join':
        return this.line(`rank ${e.rank} of ${e.world}: meeting the other ranks at ${e.address}`);
      case 'read':
        return this.update(`reading ${formatBytes(e.bytes)} of weights into memory: ${e.path}`, e.fraction);
      case 'weights':
        return this.line(`${e.copied ? 'copied' : 'mapped'} ${formatBytes(e.bytes)} of weights in ${e.seconds.toFixed(2)} s` +
          (e.rankSeconds.length > 1 ? ` (ranks: ${e.rankSeconds.map((s) => s.toFixed(2)).join(', ')} s)` : '') + `: ${e.path}`);
    }
  };
}

/**
 * Whether this process speaks for the group: it is not one rank of several (WORLD_SIZE > 1 in the
 * environment), or it is rank 0. The others stay quiet and write nothing.
 */
export function isRankZero(env: NodeJS.ProcessEnv = process.env): boolean {
  return !(Number(env.WORLD_SIZE ?? 1) > 1) || (env.RANK ?? '0').trim() === '0';
}

/** "[rank R] " when this process is one rank of several (WORLD_SIZE > 1 in the environment), else "". */
export function rankPrefix(env: NodeJS.ProcessEnv = process.env): string {
  const world = Number(env.WORLD_SIZE);
  return Number.isInteger(world) && world > 1 && env.RANK !== undefined ? `[rank ${env.RANK}] ` : '';
}
