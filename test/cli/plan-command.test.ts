import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { main } from '../../compiler/cli/main.js';

const MODELS = join(import.meta.dirname, '../../configs/models');

/** Runs the CLI in-process, capturing what it prints. */
async function run(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  vi.spyOn(console, 'log').mockImplementation((...a) => void out.push(a.join(' ')));
  vi.spyOn(console, 'error').mockImplementation((...a) => void err.push(a.join(' ')));
  const write = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => (out.push(String(chunk)), true));
  const code = await main(argv);
  write.mockRestore();
  return { code, out: out.join('\n'), err: err.join('\n') };
}

afterEach(() => vi.restoreAllMocks());

describe('mistral-compile plan', () => {
  it('prints kernels, parameters, memory and the decode ceiling for a person', async () => {
    const r = await run('plan', join(MODELS, 'mixtral-8x7b'), '--tp', '2', '--target', 'cuda');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/mixtral-8x7b\.cuda\.bf16\.tp2/);
    expect(r.out).toMatch(/46\.70 G total, 12\.88 G active per token/);
    expect(r.out).toMatch(/moe_w2_combine_residual/);
    expect(r.out).toMatch(/ceiling on NVIDIA H100 SXM5 80GB\s+\d+\.\d tokens\/s/);
  });

  it('shows the saving of the rolling window', async () => {
    const r = await run('plan', join(MODELS, 'mistral-7b-v0.1'), '--max-seq-len', '32768');
    expect(r.out).toMatch(/rolling windows save/);
  });

  it('prints the plan as JSON with --json', async () => {
    const r = await run('plan', join(MODELS, 'tiny-moe'), '--json');
    expect(r.code).toBe(0);
    const plan = JSON.parse(r.out);
    expect(plan.format).toBe('mistral-compile.plan/1');
    expect(plan.key).toBe('tiny-moe.cpu.bf16.tp1');
  });

  it('fails with one line and a non-zero exit on a bad argument, without a stack', async () => {
    for (const argv of [['plan', join(MODELS, 'tiny-moe'), '--tp', '3'], ['plan', join(MODELS, 'tiny-moe'), '--dtype', 'f8'], ['plan'], ['plan', join(MODELS, 'tiny-moe'), '--bogus'], ['plan', '/no/such/dir']]) {
      const r = await run(...argv);
      expect(r.code).not.toBe(0);
      expect(r.err.split('\n')).toHaveLength(1);
      expect(r.err).toMatch(/^mistral-compile: error: /);
      expect(r.err).not.toMatch(/\n\s+at /);
    }
  });

  it('checks --device and --context with --json too, though only the report uses them', async () => {
    for (const [option, value, message] of [['--device', 'tpu', /--device: no device profile "tpu"/], ['--context', '0', /--context: is out of range \(got 0\)/]] as const) {
      const r = await run('plan', join(MODELS, 'tiny-moe'), '--json', option, value);
      expect(r.code).toBe(1);
      expect(r.out).toBe('');
      expect(r.err).toMatch(message);
    }
  });

  it('refuses a TP size the model cannot shard, naming the field', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mc-cli-'));
    writeFileSync(join(dir, 'params.json'), JSON.stringify({ dim: 96, n_layers: 1, head_dim: 16, hidden_dim: 128, n_heads: 6, n_kv_heads: 2, norm_eps: 1e-5, vocab_size: 512, rope_theta: 1e6 }));
    const r = await run('plan', dir, '--tp', '4');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/params\.json: n_heads: n_heads = 6 cannot be sharded over --tp 4: query heads must divide evenly; use --tp 2$/);
  });

  it('adds the stack with --verbose', async () => {
    const r = await run('plan', '/no/such/dir', '--verbose');
    expect(r.err).toMatch(/\n\s+at /);
  });
});
