import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../../compiler/cli/main.js';
import { loadModel } from '../../runtime/model.js';
import { runWithClosedStdout } from './closed-stdout.js';

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

  it('logits refuses, before compiling anything, an --out that is the model\'s own file, a directory or unwritable', async () => {
    const before = readFileSync(join(modelDir, 'consolidated.safetensors'));
    const cases: Array<[string, RegExp]> = [
      [join(modelDir, 'consolidated.safetensors'), /^mistral-compile: error: --out: \S*consolidated\.safetensors is the model's own consolidated\.safetensors, which the logits would overwrite; pass another file/],
      [join(modelDir, '.', 'params.json'), /is the model's own params\.json/],
      [work, /^mistral-compile: error: --out: \S+ is a directory; pass a file path/],
      [join(work, 'no-such-dir', 'logits.bin'), /^mistral-compile: error: --out: \S+ cannot be created: its directory \S*no-such-dir does not exist; pass a file path in a directory you can write to/],
    ];
    for (const [out, message] of cases) {
      const r = await run('logits', '--model', modelDir, '--tokens', '1,2,3', '--out', out, '--cache', join(work, 'cache-never-made'));
      expect(r.code, out).toBe(1);
      expect(r.err, out).toMatch(message);
    }
    expect(existsSync(join(work, 'cache-never-made'))).toBe(false);  // refused before the build
    expect(readFileSync(join(modelDir, 'consolidated.safetensors')).equals(before)).toBe(true);
  });

  it('logits, generate and build say what the config left to defaults or ignored: "note:" lines, or "notes" in --json', async () => {
    const dir = join(work, 'with-notes');
    mkdirSync(dir, { recursive: true });
    copyFileSync(join(modelDir, 'consolidated.safetensors'), join(dir, 'consolidated.safetensors'));
    const params = JSON.parse(readFileSync(join(modelDir, 'params.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(dir, 'params.json'), JSON.stringify({ ...params, some_new_key: 1 }));
    const note = 'note: ignored keys: "some_new_key"';
    const logits = await run('logits', '--model', dir, '--tokens', '1,2', '--out', join(work, 'notes.bin'), '--cache', cache);
    expect(logits.code).toBe(0);
    expect(logits.err.split('\n')).toContain(note);
    const generate = await run('generate', '--model', dir, '--tokens', '1,2', '--max-tokens', '1', '--cache', cache, '--json');
    expect(JSON.parse(generate.out).notes).toEqual(['ignored keys: "some_new_key"']);
    expect(generate.err).toBe('');
    const build = await run('build', dir, '--cache', cache);
    expect(build.err.split('\n')).toContain(note);
    expect(JSON.parse((await run('build', dir, '--cache', cache, '--json')).out).notes).toEqual(['ignored keys: "some_new_key"']);
  });

  it('a prompt longer than the context is refused before anything is compiled (logits and generate)', async () => {
    const never = join(work, 'cache-never-built');
    for (const command of [['logits', '--out', join(work, 'never.bin')], ['generate', '--max-tokens', '1']]) {
      const r = await run(command[0]!, '--model', modelDir, '--tokens', '1,2,3', '--max-seq-len', '2', '--cache', never, ...command.slice(1));
      expect(r.code).toBe(1);
      expect(r.err).toMatch(/^mistral-compile: error: tokens: 3 positions exceed the context of 2 \(max_seq_len\); shorten the prompt, or load with a larger maxSeqLen \(--max-seq-len\)/);
    }
    expect(existsSync(never)).toBe(false);
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

  it('with --max-tokens 0 times the prefill it still runs, and reports no decode speed', async () => {
    const r = await run('generate', '--model', modelDir, '--tokens', '1,2,3', '--max-tokens', '0', '--cache', cache, '--json');
    expect(r.code).toBe(0);
    const result = JSON.parse(r.out);
    expect(result.tokens).toEqual([]);
    expect(result.stopped).toBe('max_tokens');
    // A measured forward pass of 3 tokens, not 3 tokens over a clamped nanosecond (3e9 tokens/s).
    expect(result.prefill_tokens_per_s).toBeGreaterThan(0);
    expect(result.prefill_tokens_per_s).toBeLessThan(1e8);
    expect(result.decode_tokens_per_s).toBeNull();
  });

  it('times the prefill when the first sampled token is a --stop id, and says why it stopped', async () => {
    const [first] = JSON.parse((await run('generate', '--model', modelDir, '--tokens', '1,2,3', '--max-tokens', '1', '--cache', cache, '--json')).out).tokens;
    const json = JSON.parse((await run('generate', '--model', modelDir, '--tokens', '1,2,3', '--max-tokens', '5', '--stop', String(first), '--cache', cache, '--json')).out);
    expect(json.tokens).toEqual([]);
    expect(json.stopped).toBe('stop_token');
    expect(json.prefill_tokens_per_s).toBeLessThan(1e8);
    const text = await run('generate', '--model', modelDir, '--tokens', '1,2,3', '--max-tokens', '5', '--stop', String(first), '--cache', cache);
    const line = /prefill 3 tokens at ([\d.]+) tokens\/s, decode 0 tokens$/m.exec(text.err);
    expect(line).not.toBeNull();
    expect(Number(line![1])).toBeLessThan(1e8);
  });

  it('says on stderr, and in --json, that generation stopped at the context limit', async () => {
    // tiny-moe's context is 512 positions: a 500-token prompt leaves room for 13 new tokens, not 20.
    const prompt = Array.from({ length: 500 }, (_, i) => i % 1024).join(',');
    const text = await run('generate', '--model', modelDir, '--tokens', prompt, '--max-tokens', '20', '--cache', cache);
    expect(text.code).toBe(0);
    expect(text.out.trim().split(',')).toHaveLength(13);
    expect(text.err).toMatch(/^note: generation stopped at the context limit \(max_seq_len 512\) after 13 of 20 tokens; --max-seq-len N allows a longer sequence$/m);
    const json = JSON.parse((await run('generate', '--model', modelDir, '--tokens', prompt, '--max-tokens', '20', '--cache', cache, '--json')).out);
    expect(json.tokens).toHaveLength(13);
    expect(json.stopped).toBe('context');
  });

  it('takes the model\'s params.json as --model, like plan and build', async () => {
    const r = await run('generate', '--model', join(modelDir, 'params.json'), '--tokens', '1,2,3', '--max-tokens', '2', '--cache', cache, '--json');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out).tokens).toHaveLength(2);
  });

  it('ends quietly when the reader of stdout has gone (generate | head -c 5)', async () => {
    const r = await runWithClosedStdout(['generate', '--model', modelDir, '--tokens', '1,2,3', '--max-tokens', '50', '--cache', cache]);
    expect(r.err).not.toMatch(/EPIPE|error|\n\s+at /);
    expect(r.code).toBe(141);
  });

  const BAD: Array<[string, string[], RegExp]> = [
    ['a token id at vocab_size', ['logits', '--tokens', '1,1024', '--out', '/dev/null'], /tokens: \[1\]: token id 1024 is out of range; ids must be integers from 0 to 1023/],
    ['a token list that is not numbers', ['generate', '--tokens', '1,x', '--max-tokens', '2'], /--tokens: \[1\]: "x" is not a token id/],
    ['a missing --max-tokens', ['generate', '--tokens', '1'], /--max-tokens: is required/],
    ['an unknown --weights', ['generate', '--tokens', '1', '--max-tokens', '1', '--weights', 'disk'], /--weights: unknown value "disk"; use one of map, copy/],
    ['a negative temperature', ['generate', '--tokens', '1', '--max-tokens', '2', '--temperature=-1'], /--temperature: must be a number from 0 to 100/],
    ['a negative --max-tokens after a space', ['generate', '--tokens', '1', '--max-tokens', '-1'], /--max-tokens: is out of range \(got -1\)/],
    ['a top-p of 0', ['generate', '--tokens', '1', '--max-tokens', '2', '--top-p', '0'], /--top-p: must be a number greater than 0 and at most 1 \(got "0"\); pass e\.g\. --top-p 1$/],
    ['a temperature in hexadecimal', ['generate', '--tokens', '1', '--max-tokens', '2', '--temperature', '0x10'], /--temperature: must be a number from 0 to 100 \(got "0x10"\)/],
    ['a temperature with a space', ['generate', '--tokens', '1', '--max-tokens', '2', '--temperature', ' 0.5'], /--temperature: must be a number from 0 to 100 \(got " 0\.5"\)/],
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

  it('says which directory lacks weights, with a fix for --model', async () => {
    const r = await run('generate', '--model', join(MODELS, 'tiny-moe'), '--tokens', '1', '--max-tokens', '1', '--cache', cache);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^mistral-compile: error: --model: \S*tiny-moe has no consolidated\.safetensors \(nor its shards, consolidated-00001-of-0000N\.safetensors \.\.\.\); pass a directory with params\.json and consolidated\.safetensors/);
    expect(r.err).not.toMatch(/pass the path of a \.safetensors file/);
  });

  it('reads --tokens @FILE (commas or white space) as the same prompt as the list, and names an unreadable file or a bad id in it', async () => {
    const list = Array.from({ length: 300 }, (_, i) => (i * 37) % 500);
    const file = join(work, 'prompt.txt');
    writeFileSync(file, `${list.slice(0, 150).join(', ')}\n${list.slice(150).join(' ')}\n`);
    const fromFile = JSON.parse((await run('generate', '--model', modelDir, '--tokens', `@${file}`, '--max-tokens', '3', '--cache', cache, '--json')).out);
    const fromList = JSON.parse((await run('generate', '--model', modelDir, '--tokens', list.join(','), '--max-tokens', '3', '--cache', cache, '--json')).out);
    expect(fromFile.prompt_tokens).toBe(300);
    expect(fromFile.tokens).toEqual(fromList.tokens);
    const missing = await run('generate', '--model', modelDir, '--tokens', `@${join(work, 'no-such.txt')}`, '--max-tokens', '3', '--cache', cache);
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/^mistral-compile: error: --tokens: cannot read \S*no-such\.txt \(ENOENT\); pass @ and a readable file of token ids/);
    writeFileSync(file, '1 2 x3');
    const bad = await run('generate', '--model', modelDir, '--tokens', `@${file}`, '--max-tokens', '3', '--cache', cache);
    expect(bad.err).toMatch(/^mistral-compile: error: --tokens @\S*prompt\.txt: \[2\]: "x3" is not a token id/);
  });

  it('reads a sharded checkpoint, and names a shard that is missing', async () => {
    const sharded = join(work, 'sharded');
    mkdirSync(sharded);
    copyFileSync(join(MODELS, 'tiny-moe', 'params.json'), join(sharded, 'params.json'));
    for (const n of [1, 3]) writeFileSync(join(sharded, `consolidated-0000${n}-of-00003.safetensors`), '');
    const r = await run('logits', '--model', sharded, '--tokens', '1', '--out', '/dev/null', '--cache', cache);
    expect(r.code).toBe(1);
    expect(r.err).toBe(`mistral-compile: error: ${join(sharded, 'consolidated-00002-of-00003.safetensors')}: is missing: the checkpoint is sharded in 3 files ` +
      `and this one is not in ${sharded}; download every shard of the checkpoint`);
  });
});
