import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadModelConfig } from '../../compiler/config/load.js';
import { normalizeParams } from '../../compiler/config/normalize.js';
import { ConfigError } from '../../compiler/errors.js';

const good = {
  dim: 64, n_layers: 2, head_dim: 16, hidden_dim: 128, n_heads: 4, n_kv_heads: 2, norm_eps: 1e-5, vocab_size: 512, rope_theta: 1e6,
};

/** A bad config, the field the error must name, and words the message must contain. */
const BAD: Array<[string, Record<string, unknown>, string, RegExp]> = [
  ['missing dim', { dim: undefined }, 'dim', /required field is missing/],
  ['dim as a string', { dim: '64' }, 'dim', /must be an integer.*got "64"/],
  ['negative n_layers', { n_layers: -1 }, 'n_layers', /out of range/],
  ['zero heads', { n_heads: 0 }, 'n_heads', /out of range/],
  ['fractional hidden_dim', { hidden_dim: 127.5 }, 'hidden_dim', /must be an integer/],
  ['huge vocab', { vocab_size: 1e12 }, 'vocab_size', /out of range/],
  ['kv heads not dividing heads', { n_kv_heads: 3 }, 'n_kv_heads', /must divide n_heads \(4\)/],
  ['more kv heads than heads', { n_kv_heads: 8 }, 'n_kv_heads', /must divide n_heads/],
  ['odd head_dim', { head_dim: 15 }, 'head_dim', /must be even/],
  ['head_dim absent and dim not divisible', { head_dim: undefined, dim: 66 }, 'head_dim', /not divisible by n_heads/],
  ['norm_eps zero', { norm_eps: 0 }, 'norm_eps', /greater than 0/],
  ['norm_eps as "NaN" string', { norm_eps: 'NaN' }, 'norm_eps', /greater than 0/],
  ['rope_theta negative', { rope_theta: -5 }, 'rope_theta', /greater than 0/],
  ['window zero', { sliding_window: 0 }, 'sliding_window', /out of range/],
  ['window as string', { sliding_window: '4096' }, 'sliding_window', /must be an integer/],
  ['window list not dividing layers', { n_layers: 4, sliding_window: [4, null, 8] }, 'sliding_window', /does not repeat evenly over n_layers \(4\)/],
  ['window list entry bad', { sliding_window: [4, 'x'] }, 'sliding_window[1]', /must be an integer/],
  ['both window spellings', { sliding_window: 4, _sliding_window: 4 }, '_sliding_window', /older spelling/],
  ['top-k above experts', { moe: { num_experts: 2, num_experts_per_tok: 3 } }, 'moe.num_experts_per_tok', /cannot exceed moe.num_experts \(2\)/],
  ['moe not an object', { moe: 8 }, 'moe', /must be an object/],
  ['moe missing experts', { moe: { num_experts_per_tok: 2 } }, 'moe.num_experts', /required/],
  ['mamba', { model_type: 'mamba' }, 'model_type', /not supported: a Mamba model/],
  ['vision encoder', { vision_encoder: { hidden_size: 1024 } }, 'vision_encoder', /not supported/],
  ['lora', { lora: { rank: 16 } }, 'lora', /not supported/],
  ['quantized', { quantization: { qformat_weight: 'fp8_e4m3' } }, 'quantization', /not supported/],
  ['yarn', { yarn: { factor: 4 } }, 'yarn', /not supported/],
  ['llama 4 scaling', { llama_4_scaling: { original_max_position_embeddings: 16384, beta: 0.1 } }, 'llama_4_scaling', /not supported: position-dependent attention scaling/],
  ['rope scaling', { rope_scaling: { type: 'linear', factor: 4 } }, 'rope_scaling', /not supported: scaled RoPE/],
  ['tied_embeddings not bool', { tied_embeddings: 'yes' }, 'tied_embeddings', /true or false/],
  ['injection attempt in a number field', { dim: '64; system("rm -rf /")' }, 'dim', /must be an integer/],
];

describe('params.json validation', () => {
  for (const [what, change, field, message] of BAD) {
    it(`rejects ${what}, naming ${field}`, () => {
      const raw: Record<string, unknown> = { ...good, ...change };
      for (const k of Object.keys(raw)) if (raw[k] === undefined) delete raw[k];
      let error: unknown;
      try {
        normalizeParams(raw, '/models/x/params.json');
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(ConfigError);
      const e = error as ConfigError;
      expect(e.field).toBe(field);
      expect(e.message).toMatch(message);
      expect(e.message.startsWith(`/models/x/params.json: ${field}: `)).toBe(true);
      expect(e.message).not.toContain('\n');
    });
  }

  it('escapes line separators and bidirectional overrides from the input in its one-line message', () => {
    let message = '';
    try {
      normalizeParams({ ...good, dim: 'a\u2028b\u202egnp.exe' }, 'p.json');
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toContain('a\\u2028b\\u202egnp');
    expect(message).not.toMatch(/[\u2028\u202e]/);
  });

  it('rejects a LoRA adapter file that is not a model', () => {
    expect(() => normalizeParams({ lora: { rank: 8 } }, 'adapter.json')).toThrow(/LoRA adapter config, not a model/);
  });

  it('rejects a top level that is not an object', () => {
    for (const raw of [[], 'x', 3, null]) expect(() => normalizeParams(raw, 'p.json')).toThrow(ConfigError);
  });
});

describe('params.json normalization', () => {
  it('defaults head_dim to dim / n_heads and says so', () => {
    const m = normalizeParams({ ...good, head_dim: undefined }, 'p.json');
    expect(m.head_dim).toBe(16);
    expect(m.notes.join()).toMatch(/head_dim absent/);
  });

  it('keeps a head_dim that differs from dim / n_heads (Mistral NeMo)', () => {
    expect(normalizeParams({ ...good, head_dim: 24 }, 'p.json').head_dim).toBe(24);
  });

  it('defaults rope_theta to 1e4 when a window marks an early model, else 1e6', () => {
    const { rope_theta: _, ...noTheta } = good;
    expect(normalizeParams({ ...noTheta, sliding_window: 8 }, 'p.json').rope_theta).toBe(1e4);
    expect(normalizeParams(noTheta, 'p.json').rope_theta).toBe(1e6);
  });

  it('expands a per-layer window list as a repeating pattern with null meaning full attention', () => {
    const m = normalizeParams({ ...good, n_layers: 6, sliding_window: [null, 4, 4] }, 'p.json');
    expect(m.sliding_window).toEqual([null, 4, 4, null, 4, 4]);
  });

  it('accepts the older _sliding_window spelling', () => {
    expect(normalizeParams({ ...good, _sliding_window: 4 }, 'p.json').sliding_window).toEqual([4, 4]);
  });

  it('reports unknown keys instead of failing', () => {
    const m = normalizeParams({ ...good, some_future_key: 1 }, 'p.json');
    expect(m.notes.join()).toMatch(/ignored keys: "some_future_key"/);
  });

  it('reports unknown keys inside moe too, with their path', () => {
    const m = normalizeParams({ ...good, zeta: 0, moe: { num_experts: 4, num_experts_per_tok: 2, expert_hidden_dim: 64 } }, 'p.json');
    expect(m.notes.join()).toMatch(/ignored keys: "moe\.expert_hidden_dim", "zeta"/);
    expect(normalizeParams({ ...good, moe: { num_experts: 4, num_experts_per_tok: 2 } }, 'p.json').notes.join()).not.toMatch(/ignored/);
  });

  it('a missing field says so once; a bad real number gets an example of its own kind', () => {
    const { dim: _, ...noDim } = good;
    expect(() => normalizeParams(noDim, 'p.json')).toThrow(/^p\.json: dim: required field is missing; add "dim"/);
    expect(() => normalizeParams(noDim, 'p.json')).not.toThrow(/got missing/);
    expect(() => normalizeParams({ ...good, rope_theta: 0 }, 'p.json')).toThrow(/rope_theta: must be a number greater than 0 .*\(got 0\); write a plain JSON number such as 1000000$/);
    expect(() => normalizeParams({ ...good, norm_eps: -1 }, 'p.json')).toThrow(/norm_eps: .*such as 1e-5$/);
  });

  it('derives a file-name-safe name from the model directory', () => {
    expect(normalizeParams(good, '/x/My Model "v2"/params.json').name).toBe('my-model-v2');
  });
});

describe('reading params.json from disk', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mc-config-'));

  it('accepts a model directory', () => {
    mkdirSync(join(dir, 'model-a'));
    writeFileSync(join(dir, 'model-a', 'params.json'), JSON.stringify(good));
    expect(loadModelConfig(join(dir, 'model-a')).name).toBe('model-a');
  });

  it('names a model with a long directory name after its first 64 characters, never ending in "-" or "."', () => {
    const long = `${'a'.repeat(63)}-${'b'.repeat(10)}`;
    mkdirSync(join(dir, long));
    writeFileSync(join(dir, long, 'params.json'), JSON.stringify(good));
    expect(loadModelConfig(join(dir, long)).name).toBe('a'.repeat(63));
  });

  it('names the model after the directory the file resolves to, however the path is written', () => {
    const cwdRelative = relative(process.cwd(), join(dir, 'model-a'));
    for (const written of [`${dir}/model-a/.`, `${dir}/model-a/./params.json`, `${dir}/model-a/../model-a`, `${cwdRelative}/./params.json`]) {
      expect(loadModelConfig(written).name, written).toBe('model-a');
    }
  });

  it('names the file when the JSON is malformed', () => {
    writeFileSync(join(dir, 'bad.json'), '{"dim": 64,');
    expect(() => loadModelConfig(join(dir, 'bad.json'))).toThrow(/bad\.json: is not valid JSON/);
  });

  it('says so when the path does not exist or the directory has no params.json', () => {
    expect(() => loadModelConfig(join(dir, 'nope.json'))).toThrow(/no such file or directory/);
    mkdirSync(join(dir, 'empty'));
    expect(() => loadModelConfig(join(dir, 'empty'))).toThrow(/has no params\.json/);
  });

  it('names a params.json in the directory that is not a regular file (a FIFO would block the read forever)', () => {
    mkdirSync(join(dir, 'fifo-model'));
    execFileSync('mkfifo', [join(dir, 'fifo-model', 'params.json')]);
    expect(() => loadModelConfig(join(dir, 'fifo-model'))).toThrow(/fifo-model\/params\.json: is not a regular file; make params\.json the model's config file$/);
    mkdirSync(join(dir, 'dir-model', 'params.json'), { recursive: true });
    expect(() => loadModelConfig(join(dir, 'dir-model'))).toThrow(/dir-model\/params\.json: is a directory/);
  });
});
