/**
 * A checkpoint changed while the runtime addon maps it: truncated between two calls, truncated in
 * the middle of a forward pass (reading a mapped page past the end of a file raises SIGBUS, which
 * kills a process), rewritten in place, or replaced by a rename. Each runs in a child process, so
 * that a crash fails the test instead of killing vitest; each must end in a clear error (or, for
 * the rename, in nothing at all) with the process alive.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nativeAddonPath } from '../../runtime/native-loader.js';
import { buildFakeModel, referenceLogits, writeFakeCheckpoint } from '../runtime/fake-model.js';

const CHILD = join(import.meta.dirname, 'mapped-file-child.mjs');
let dir: string;
let library: string;
let slowLibrary: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mc-fuzz-mapped-'));
  [library, slowLibrary] = await Promise.all([buildFakeModel(dir), buildFakeModel(dir, ['FAKE_FORWARD_SLEEP_MS=100'])]);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Step { name: string; ok: boolean; value?: unknown; error?: string }

/** Runs a scenario over a fresh checkpoint; the child must exit 0 and report its steps. */
async function scenario(name: string, slow = false): Promise<{ steps: Map<string, Step>; path: string }> {
  const checkpoint = writeFakeCheckpoint(dir);
  const result = await execa(process.execPath, [CHILD, nativeAddonPath(), slow ? slowLibrary : library, checkpoint.path, JSON.stringify(checkpoint.weights), name],
    { reject: false, all: true, timeout: 60_000 });
  expect({ signal: result.signal ?? null, exitCode: result.exitCode, output: result.exitCode === 0 ? '' : result.all })
    .toEqual({ signal: null, exitCode: 0, output: '' });
  const steps = JSON.parse(result.stdout.trim().split('\n').pop()!) as Step[];
  expect(steps[0]).toEqual({ name: 'before', ok: true, value: referenceLogits([], [3])[0] });
  return { steps: new Map(steps.map((s) => [s.name, s])), path: checkpoint.path };
}

describe('a checkpoint changed while it is mapped', () => {
  it('truncated between calls: forward, forwardSync and readHeader refuse, naming the file and the sizes', async () => {
    const { steps, path } = await scenario('truncate-between-calls');
    const shrunk = `${path}: has shrunk from 416 to 100 bytes since it was mapped; load it again once it is no longer being written`;
    expect(steps.get('forwardSync')).toEqual({ name: 'forwardSync', ok: false, error: shrunk });
    expect(steps.get('forward')).toEqual({ name: 'forward', ok: false, error: shrunk });
    expect(steps.get('readHeader')).toEqual({ name: 'readHeader', ok: false, error: shrunk });
  });

  it('truncated during a forward pass: the process survives (no SIGBUS) and the call rejects', async () => {
    const { steps, path } = await scenario('truncate-during-forward', true);
    expect(steps.get('forward')).toEqual({
      name: 'forward', ok: false,
      error: `${path}: was truncated while a model was reading it (its pages past the new end read as zeros); load it again once it is no longer being written`,
    });
    // Later calls keep refusing: the model's weights are gone.
    expect(steps.get('after')?.ok).toBe(false);
    expect(steps.get('size')?.value).toBe(0);
  });

  it('rewritten in place with other bytes: refused as modified', async () => {
    const { steps, path } = await scenario('rewrite-in-place');
    expect(steps.get('forwardSync')?.error).toBe(`${path}: has been modified since it was mapped (the weights in memory may no longer be the checkpoint's); load it again once it is no longer being written`);
  });

  it('replaced by a rename: the model keeps reading the file it mapped', async () => {
    const { steps } = await scenario('replace-by-rename');
    expect(steps.get('forwardSync')).toEqual({ name: 'forwardSync', ok: true, value: referenceLogits([], [3])[0] });
    expect(steps.get('readHeader')).toEqual({ name: 'readHeader', ok: true, value: 8 });
  });

  it('leaves a SIGBUS that is not a fault in its mappings to the default action', async () => {
    const checkpoint = writeFakeCheckpoint(dir);
    const result = await execa(process.execPath, [CHILD, nativeAddonPath(), library, checkpoint.path, JSON.stringify(checkpoint.weights), 'sigbus-elsewhere'],
      { reject: false, timeout: 60_000 });
    // Under AddressSanitizer its own handler reports the signal and aborts instead.
    if (process.env.LD_PRELOAD?.includes('libasan')) expect(result.exitCode === 0).toBe(false);
    else expect(result.signal).toBe('SIGBUS');
  });
});
