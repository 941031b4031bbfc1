import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../../compiler/cli/main.js';
import { loadModel } from '../../runtime/model.js';

const MODELS = join(import.meta.dirname, '../../configs/models');
let work: string;
let modelDir: string;
let cache: string;

async function run(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  vi.spyOn(console, 'log').mockImplementation((...a) => void out.push(a.join(' ')));
  vi.spyOn(console, 'error').mockImplementation((...a) => void err.push(a.join(' ')));
  const stdout = vi.spyOn(process.stdout, 'write').mockImplementation((c) => (out.push(String(c)), true));
  const stderr = vi.spyOn(process.stderr, 'write').mockImplementation((c) => (err.push(String(c)), true));
  const code = await main(argv);
  stdout.mockRestore();
  stderr.mockRestore();
  return { code, out: out.join(''), err: err.join('') };
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'mc-cli-model-'));
  modelDir = join(work, 'tiny-moe');
  cache = join(work, 'cache');
  vi.restoreAllMocks();
});
afterEach(() => vi.restoreAllMocks());

describe('mistral-compile random-weights, build, logits and generate', () => {
  it('random-weights writes params.json and consolidated.safetensors', async () => {
    const r = await run('random-weights', join(MODELS, 'tiny-moe'), '--out', modelDir, '--seed', '5', '--dtype', 'f32', '--json');
    expect(r.code).toBe(0);
    const result = JSON.parse(r.out);
    expect(statSync(result.weights).size).toBe(result.bytes);
    expect(JSON.parse(readFileSync(join(modelDir, 'params.json'), 'utf8')).moe).toEqual({ num_experts: 8, num_experts_per_tok: 2 });
  });

  it('build prints the library and reuses it the second time', async () => {
    const first = JSON.parse((await run('build', modelDir, '--target', 'cpu', '--dtype', 'f32', '--cache', cache, '--json')).out);
    const second = JSON.parse((await run('build', modelDir, '--target', 'cpu', '--dtype', 'f32', '--cache', cache, '--json')).out);
    expect(first.key).toBe('tiny-moe.cpu.f32.tp1');
    expect(second.cached).toBe(true);
    expect(second.library).toBe(first.library);
  });

  it('build --out writes the typed module model.ts; the cache key does not depend on it', async () => {
    const out = join(work, 'out');
    const built = JSON.parse((await run('build', modelDir, '--target', 'cpu', '--dtype', 'f32', '--cache', cache, '--out', out, '--json')).out);
    expect(built.cached).toBe(true);  // same hash as the build above, which wrote no model.ts
    expect(readFileSync(join(out, 'model.ts'), 'utf8')).toMatch(/"vocab_size": 1024/);
    expect(existsSync(join(built.library, '..', 'model.ts'))).toBe(false);
  });

  it('loading and running a model does not load ts-morph (the TypeScript compiler, ~70 MiB)', () => {
    // A process of its own: this one has rendered model.ts already.
    const script = `import { createRequire } from 'node:module';
      const { loadModel } = await import('./runtime/model.ts');
      const m = await loadModel(${JSON.stringify(modelDir)}, { cacheDir: ${JSON.stringify(cache)} });
      await m.logits([1, 2]);
      m.close();
      const loaded = Object.keys(createRequire(import.meta.url).cache).filter((k) => k.includes('ts-morph') || k.includes('typescript'));
      console.log(JSON.stringify(loaded));`;
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: join(import.meta.dirname, '../..'), encoding: 'utf8' });
    expect(JSON.parse(out.trim().split('\n').at(-1)!)).toEqual([]);
  });

  it('logits writes float32 little-endian [n_tokens, vocab_size] equal to the library API', async () => {
    const out = join(work, 'logits.bin');
    const r = await run('logits', '--model', modelDir, '--tokens', '1,2,3,500', '--out', out, '--cache', cache, '--json');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out).shape).toEqual([4, 1024]);
    const bytes = readFileSync(out);
    expect(bytes.length).toBe(4 * 1024 * 4);
    const model = await loadModel(modelDir, { cacheDir: cache });
    const rows = await model.logits([1, 2, 3, 500]);
    model.close();
    for (let t = 0; t < 4; t++) for (const v of [0, 17, 1023]) expect(bytes.readFloatLE((t * 1024 + v) * 4)).toBe(rows[t]![v]);
  });

  it('generate prints new token ids and speeds as JSON', async () => {
    const r = await run('generate', '--model', modelDir, '--tokens', '1,2,3', '--max-tokens', '5', '--cache', cache, '--json');
    expect(r.code).toBe(0);
    const result = JSON.parse(r.out);
    expect(result.tokens).toHaveLength(5);
    expect(result.tokens.every((t: number) => Number.isInteger(t) && t >= 0 && t < 1024)).toBe(true);
    expect(result.prefill_tokens_per_s).toBeGreaterThan(0);
    expect(result.decode_tokens_per_s).toBeGreaterThan(0);
  });

  it('shows progress on stderr without --json and keeps stdout for the result', async () => {
    const r = await run('generate', '--model', modelDir, '--tokens', '1,2,3', '--max-tokens', '3', '--cache', cache);
    expect(r.out.trim()).toMatch(/^\d+,\d+,\d+$/);
    expect(r.err).toMatch(/cached tiny-moe\.cpu\.f32\.tp1/);
    // A checkpoint of one read step (256 MiB) shows no reading progress, only the load's summary line.
    expect(r.err).not.toMatch(/reading .* of weights into memory/);
    expect(r.err).toMatch(/mapped [\d.]+ [KMG]iB of weights in [\d.]+ s: \S*consolidated\.safetensors/);
    expect(r.err).toMatch(/prefill 3 tokens at [\d.]+ tokens\/s, decode 2 tokens at [\d.]+ tokens\/s/);
  });

  const BAD: Array<[string, string[], RegExp]> = [
    ['a token id at vocab_size', ['logits', '--tokens', '1,1024', '--out', '/dev/null'], /tokens: \[1\]: token id 1024 is out of range; ids must be integers from 0 to 1023/],
    ['a token list that is not numbers', ['generate', '--tokens', '1,x', '--max-tokens', '2'], /--tokens: \[1\]: "x" is not a token id/],
    ['a missing --max-tokens', ['generate', '--tokens', '1'], /--max-tokens: is required/],
    ['an unknown --weights', ['generate', '--tokens', '1', '--max-tokens', '1', '--weights', 'disk'], /--weights: unknown value "disk"; use one of map, copy/],
    ['a negative temperature', ['generate', '--tokens', '1', '--max-tokens', '2', '--temperature=-1'], /--temperature: must be a number from 0 to 100/],
  ];
  for (const [what, argv, message] of BAD) {
    it(`rejects ${what} with one line and a non-zero exit`, async () => {
      const r = await run(...argv, '--model', modelDir, '--cache', cache);
      expect(r.code).toBe(1);
      // Progress lines may come first; the error is one line, and the last.
      const lines = r.err.trim().split('\n');
      expect(lines.filter((l) => l.includes('error'))).toHaveLength(1);
      expect(lines.at(-1)).toMatch(message);
    });
  }

  it('says which directory lacks weights', async () => {
    const r = await run('generate', '--model', join(MODELS, 'tiny-moe'), '--tokens', '1', '--max-tokens', '1', '--cache', cache);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/consolidated\.safetensors/);
  });
});
