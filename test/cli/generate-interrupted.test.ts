/**
 * generate stopped by Ctrl-C (SIGINT) or a kill: the ids printed so far end their line and a
 * summary says it was interrupted; with --json, the object of what was generated is printed
 * ("stopped": "interrupted"); the process still ends by the signal. Each run is a child process.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadModelConfig } from '../../compiler/config/load.js';
import { writeRandomWeights } from '../../compiler/weights/random.js';

const ROOT = join(import.meta.dirname, '../..');
const work = mkdtempSync(join(tmpdir(), 'mc-generate-int-'));
const model = join(work, 'tiny-moe');
const cache = join(work, 'cache');
afterAll(() => rmSync(work, { recursive: true, force: true }));
beforeAll(async () => {
  await writeRandomWeights(loadModelConfig(join(ROOT, 'configs/models/tiny-moe')), model, { seed: 0, dtype: 'bf16' });
});

/** The CLI (main.ts through tsx's loader, in one process) generating without end, signalled once `ready(stdout, stderr)`. */
async function interrupted(signal: 'SIGINT' | 'SIGTERM', extra: string[], ready: (out: string, err: string) => boolean) {
  const argv = ['generate', '--model', model, '--tokens', '1,2,3', '--max-tokens', '16000000', '--max-seq-len', '1000000', '--cache', cache, ...extra];
  const script = `import { main } from './compiler/cli/main.ts'; process.exitCode = await main(${JSON.stringify(argv)});`;
  const run = execa(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, reject: false, buffer: true });
  let out = '', err = '';
  run.stdout!.on('data', (c) => (out += String(c)));
  run.stderr!.on('data', (c) => (err += String(c)));
  const deadline = Date.now() + 90_000;
  while (!ready(out, err)) {
    if (Date.now() > deadline) throw new Error(`never ready: ${err}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  run.kill(signal);
  const result = await run;
  return { signal: result.signal, out, err };  // as streamed: execa's result strips the final newline
}

it('SIGINT while it compiles: a summary line, and the compiler and its staging directory gone', async () => {
  const cold = join(work, 'cold-cache');
  const argv = ['generate', '--model', model, '--tokens', '1,2,3', '--max-tokens', '5', '--cache', cold];
  const script = `import { main } from './compiler/cli/main.ts'; process.exitCode = await main(${JSON.stringify(argv)});`;
  const run = execa(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, reject: false });
  let err = '';
  run.stderr!.on('data', (c) => (err += String(c)));
  while (!err.includes('compiling')) await new Promise((r) => setTimeout(r, 20));
  run.kill('SIGINT');
  const result = await run;
  expect(result.signal).toBe('SIGINT');
  expect(err).toMatch(/generate: interrupted after 0 of 5 tokens\n$/);
  expect(readdirSync(join(cold, 'tiny-moe.cpu.bf16.tp1'))).toEqual([]);
}, 120_000);

it('SIGINT: the ids so far end their line, and a summary says it was interrupted', async () => {
  const r = await interrupted('SIGINT', [], (out) => out.split(',').length > 5);
  expect(r.signal).toBe('SIGINT');
  expect(r.out).toMatch(/^\d+(,\d+)*\n$/);
  const count = r.out.trim().split(',').length;
  expect(r.err).toMatch(new RegExp(`tiny-moe\\.cpu\\.bf16\\.tp1: interrupted after ${count} of 16000000 tokens\\n$`));
}, 120_000);

it('SIGTERM with --json: one object of what was generated, "stopped": "interrupted"', async () => {
  // Nothing is printed before the end with --json: signal a few seconds in (while it loads or generates: either prints the object).
  let since = 0;
  const r = await interrupted('SIGTERM', ['--json'], () => (since === 0 ? ((since = Date.now()), false) : Date.now() - since > 3000));
  expect(r.signal).toBe('SIGTERM');
  const result = JSON.parse(r.out) as { tokens: number[]; stopped: string; prompt_tokens: number; key: string };
  expect(result.stopped).toBe('interrupted');
  expect(result.prompt_tokens).toBe(3);
  expect([null, 'tiny-moe.cpu.bf16.tp1']).toContain(result.key);  // null: signalled before the model was loaded
  expect(Array.isArray(result.tokens)).toBe(true);
  expect(r.out.trim().split('\n')).toHaveLength(1);
}, 120_000);
