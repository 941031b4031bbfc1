/** What the CLI shows of long work on stderr (compiler/cli/progress.ts). */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Progress } from '../../compiler/cli/progress.js';

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
