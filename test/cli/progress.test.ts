/** What the CLI shows of long work on stderr (compiler/cli/progress.ts). */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Progress, stopTickers } from '../../compiler/cli/progress.js';

afterEach(() => vi.restoreAllMocks());

function stderrOf(work: (p: Progress) => void, quiet = false): string {
  const written: string[] = [];
  vi.spyOn(process.stderr, 'write').mockImplementation((c) => (written.push(String(c)), true));
  work(new Progress(quiet));
  vi.restoreAllMocks();
  return written.join('');
}

describe('load progress on stderr', () => {
  it('shows a checkpoint being read into memory as a percentage, then the load\'s line', () => {
    const text = stderrOf((p) => {
      p.onLoad({ stage: 'read', path: '/m/consolidated.safetensors', bytes: 14 * 2 ** 30, fraction: 1 });
      p.onLoad({ stage: 'weights', path: '/m/consolidated.safetensors', bytes: 14 * 2 ** 30, seconds: 9.5, rankSeconds: [1.2], copied: false });
    });
    expect(text).toMatch(/reading 14\.0 GiB of weights into memory: \/m\/consolidated\.safetensors 100%/);
    expect(text).toMatch(/mapped 14\.0 GiB of weights in 9\.50 s: \/m\/consolidated\.safetensors\n$/);
  });

  it('is silent with --json', () => {
    expect(stderrOf((p) => p.onLoad({ stage: 'read', path: '/m/x', bytes: 1, fraction: 0.5 }), true)).toBe('');
  });
});

describe('a compile under way', () => {
  it('shows its elapsed time (a line every 30 s off a terminal) until the next line, and stops before an error', () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval', 'performance'] });
    const tty = Object.getOwnPropertyDescriptor(process.stderr, 'isTTY');
    Object.defineProperty(process.stderr, 'isTTY', { value: false, configurable: true });  // a log, not a terminal
    const written: string[] = [];
    vi.spyOn(process.stderr, 'write').mockImplementation((c) => (written.push(String(c)), true));
    try {
      const p = new Progress(false);
      p.onLoad({ stage: 'compile', key: 'm.cuda.bf16.tp1', compiler: 'nvcc', files: 20 });
      vi.advanceTimersByTime(65_000);
      p.onLoad({ stage: 'done', key: 'm.cuda.bf16.tp1', library: '/c/lib.so', seconds: 65 });
      vi.advanceTimersByTime(60_000);  // stopped by the line
      p.elapsed('compiling again:');
      stopTickers();                   // as the CLI does before it prints an error
      vi.advanceTimersByTime(60_000);
    } finally {
      vi.useRealTimers();
      vi.restoreAllMocks();
      if (tty === undefined) delete (process.stderr as { isTTY?: boolean }).isTTY;
      else Object.defineProperty(process.stderr, 'isTTY', tty);
    }
    expect(written.join('')).toBe('compiling m.cuda.bf16.tp1: 20 files with nvcc\ncompiling m.cuda.bf16.tp1: 30 s\ncompiling m.cuda.bf16.tp1: 60 s\nbuilt m.cuda.bf16.tp1 in 65.00 s: /c/lib.so\n');
  });
});
