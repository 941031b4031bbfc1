/**
 * random-weights (the CLI, which handles terminating signals) killed by a signal while it writes: its temporary files (as large as the
 * checkpoint) go with it, the pair that was there stays as it was, and the process still ends by
 * that signal. Each run is a child process (the signal must not reach vitest).
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { packageRoot } from '../../compiler/paths.js';

const root = mkdtempSync(join(tmpdir(), 'mc-random-int-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Writes random weights for a ~130 MB model (vocabulary 262144, dim 128, f32) into argv[2] with seed argv[3]. */
const CHILD = `
import { normalizeParams } from ${JSON.stringify(join(packageRoot(), 'compiler/config/normalize.ts'))};
import { writeRandomWeights } from ${JSON.stringify(join(packageRoot(), 'compiler/weights/random.ts'))};
import { handleTerminatingSignals } from ${JSON.stringify(join(packageRoot(), 'compiler/on-signal.ts'))};
handleTerminatingSignals();  // as the CLI does
const model = normalizeParams({ dim: 128, n_layers: 1, n_heads: 4, n_kv_heads: 2, head_dim: 32, hidden_dim: 256, vocab_size: 262144,
  norm_eps: 1e-5, rope_theta: 1e6, max_seq_len: 64 }, '<inline>', { name: 'wide-vocab' });
await writeRandomWeights(model, process.argv[2], { seed: Number(process.argv[3]), dtype: 'f32' });
`;
const child = join(root, 'child.mts');
const out = join(root, 'model');
// One process (node with tsx's loader), not the tsx CLI, whose wrapper process would take the signal
// and relay it: the wrapper could end before the script had cleaned up.
const node = (...args: string[]) => execa(process.execPath, ['--import', 'tsx', ...args], { cwd: packageRoot(), reject: false });
const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

beforeAll(async () => {
  writeFileSync(child, CHILD);
  const first = await node(child, out, '1');  // the pair an interrupted run must leave as it was
  expect(first.exitCode, first.stderr).toBe(0);
}, 120_000);

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  it(`${signal} while the weights are written: no temporary file left, the old pair unchanged, ended by ${signal}`, async () => {
    const before = { weights: sha(join(out, 'consolidated.safetensors')), params: sha(join(out, 'params.json')) };
    const run = node(child, out, '2');
    // Signal once its temporary checkpoint has grown (it is being written, not yet published).
    const deadline = Date.now() + 60_000;
    for (;;) {
      const temp = readdirSync(out).find((n) => n.endsWith('.tmp'));
      if (temp !== undefined) {
        try {
          if (statSync(join(out, temp)).size > 8 << 20) break;
        } catch {
          // renamed or removed meanwhile
        }
      }
      if (Date.now() > deadline) throw new Error('the child never wrote a temporary file');
      await new Promise((r) => setTimeout(r, 20));
    }
    run.kill(signal);
    const result = await run;
    expect(result.signal, result.stderr).toBe(signal);
    expect(readdirSync(out).sort()).toEqual(['consolidated.safetensors', 'params.json']);
    expect({ weights: sha(join(out, 'consolidated.safetensors')), params: sha(join(out, 'params.json')) }).toEqual(before);
  }, 120_000);
}
