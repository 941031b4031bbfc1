/** The CLI's process-level behaviour (compiler/cli/main.ts, args.ts): usage, arguments, internal errors, a closed pipe. */
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { main } from '../../compiler/cli/main.js';
import { runWithClosedStdout } from './closed-stdout.js';

const MODELS = join(import.meta.dirname, '../../configs/models');

// An internal error (a bug, not a MistralCompileError) out of one command; every other command is real.
vi.mock('../../compiler/cli/commands/random-weights.js', async (original) => ({
  ...(await original<object>()),
  randomWeightsCommand: async () => {
    throw new TypeError('boom');
  },
}));

async function run(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  vi.spyOn(console, 'log').mockImplementation((...a) => void out.push(a.join(' ')));
  vi.spyOn(console, 'error').mockImplementation((...a) => void err.push(a.join(' ')));
  vi.spyOn(process.stdout, 'write').mockImplementation((c) => (out.push(String(c)), true));
  const code = await main(argv);
  vi.restoreAllMocks();
  return { code, out: out.join('\n'), err: err.join('\n') };
}

afterEach(() => vi.restoreAllMocks());

describe('mistral-compile without a command', () => {
  it('prints the usage to stderr, not stdout, and exits 1', async () => {
    const r = await run();
    expect(r.code).toBe(1);
    expect(r.out).toBe('');
    expect(r.err).toMatch(/^usage: mistral-compile <command>/);
  });

  it('prints the usage to stdout with --help and exits 0', async () => {
    const r = await run('--help');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^usage: mistral-compile <command>/);
  });
});

describe('options that take a value', () => {
  const NEGATIVE: Array<[string, RegExp]> = [
    ['--max-tokens', /^mistral-compile: error: --max-tokens: is out of range \(got -1\); pass a value from 0 to/],
    ['--temperature', /^mistral-compile: error: --temperature: must be a number from 0 to 100 \(got "-1"\)/],
    ['--seed', /^mistral-compile: error: --seed: is out of range \(got -1\); pass a value from 0 to 2147483647/],
  ];
  for (const [option, message] of NEGATIVE) {
    it(`read "${option} -1" as the value -1 and give the same range error as "${option}=-1"`, async () => {
      const base = ['generate', '--tokens', '1', '--max-tokens', '2'];
      const separate = await run(...base, option, '-1');
      const joined = await run(...base, `${option}=-1`);
      expect(separate.code).toBe(1);
      expect(separate.err).toMatch(message);
      expect(separate.err).toBe(joined.err);
    });
  }

  it('still call a missing value before another option a missing value', async () => {
    const r = await run('plan', join(MODELS, 'tiny-moe'), '--tp', '--json');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^mistral-compile: error: mistral-compile plan: Option '--tp' argument is ambiguous/);
  });
});

describe('help', () => {
  for (const command of ['generate', 'logits']) {
    it(`of ${command} lists --max-tokens-per-call, which it accepts`, async () => {
      const r = await run(command, '--help');
      expect(r.code).toBe(0);
      expect(r.out).toMatch(/--max-tokens-per-call N/);
    });
  }
});

describe('an internal error', () => {
  it('points at --verbose for the stack', async () => {
    const r = await run('random-weights', 'x');
    expect(r.code).toBe(70);
    expect(r.err).toBe('mistral-compile: internal error: boom (please report it; --verbose shows the stack)');
  });

  it('with --verbose prints the stack instead of pointing at --verbose', async () => {
    const r = await run('random-weights', 'x', '--verbose');
    expect(r.code).toBe(70);
    expect(r.err).not.toMatch(/--verbose shows the stack/);
    expect(r.err).toMatch(/^mistral-compile: internal error: boom \(please report it with the stack below\)\nTypeError: boom\n\s+at /);
  });
});

describe('a closed stdout pipe', () => {
  it('ends plan --json quietly with 141 (128 + SIGPIPE), no message and no stack', async () => {
    const r = await runWithClosedStdout(['plan', join(MODELS, 'tiny-moe'), '--json']);
    expect(r.err).toBe('');
    expect(r.code).toBe(141);
  });
});
