import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadModelConfig } from '../compiler/config/load.js';
import { shippedModelConfigs } from '../compiler/config/shipped.js';

/** What each shipped params.json must describe (FACTS.md's table, configs/models/README.md). */
interface Expected {
  dim: number;
  n_layers: number;
  n_heads: number;
  n_kv_heads: number;
  head_dim: number;
  hidden_dim: number;
  vocab_size: number;
  rope_theta: number;
  /** The pattern that repeats over the layers; [null] = full attention everywhere. */
  window: Array<number | null>;
  moe: [experts: number, topK: number] | null;
  max_seq_len: number;
}

const real = (e: Omit<Expected, 'head_dim'> & { head_dim?: number }): Expected => ({ head_dim: 128, ...e });

const EXPECTED: Record<string, Expected> = {
  'mistral-7b-v0.1': real({ dim: 4096, n_layers: 32, n_heads: 32, n_kv_heads: 8, hidden_dim: 14336, vocab_size: 32000, rope_theta: 1e4, window: [4096], moe: null, max_seq_len: 8192 }),
  'mistral-7b-v0.3': real({ dim: 4096, n_layers: 32, n_heads: 32, n_kv_heads: 8, hidden_dim: 14336, vocab_size: 32768, rope_theta: 1e6, window: [null], moe: null, max_seq_len: 32768 }),
  'mixtral-8x7b': real({ dim: 4096, n_layers: 32, n_heads: 32, n_kv_heads: 8, hidden_dim: 14336, vocab_size: 32000, rope_theta: 1e6, window: [null], moe: [8, 2], max_seq_len: 32768 }),
  'mixtral-8x22b': real({ dim: 6144, n_layers: 56, n_heads: 48, n_kv_heads: 8, hidden_dim: 16384, vocab_size: 32768, rope_theta: 1e6, window: [null], moe: [8, 2], max_seq_len: 65536 }),
  'mistral-nemo-12b': real({ dim: 5120, n_layers: 40, n_heads: 32, n_kv_heads: 8, hidden_dim: 14336, vocab_size: 131072, rope_theta: 1e6, window: [null], moe: null, max_seq_len: 131072 }),
  'codestral-22b': real({ dim: 6144, n_layers: 56, n_heads: 48, n_kv_heads: 8, hidden_dim: 16384, vocab_size: 32768, rope_theta: 1e6, window: [null], moe: null, max_seq_len: 32768 }),
  'mistral-small-24b': real({ dim: 5120, n_layers: 40, n_heads: 32, n_kv_heads: 8, hidden_dim: 32768, vocab_size: 131072, rope_theta: 1e8, window: [null], moe: null, max_seq_len: 32768 }),
  'mistral-large-2': real({ dim: 12288, n_layers: 88, n_heads: 96, n_kv_heads: 8, hidden_dim: 28672, vocab_size: 32768, rope_theta: 1e6, window: [null], moe: null, max_seq_len: 131072 }),
  'ministral-8b': real({ dim: 4096, n_layers: 36, n_heads: 32, n_kv_heads: 8, hidden_dim: 12288, vocab_size: 131072, rope_theta: 1e8, window: [null, 32768, 32768, 32768], moe: null, max_seq_len: 131072 }),
  'tiny-dense': { dim: 64, n_layers: 2, n_heads: 4, n_kv_heads: 2, head_dim: 24, hidden_dim: 160, vocab_size: 512, rope_theta: 1e4, window: [8], moe: null, max_seq_len: 128 },
  'tiny-dense-full': { dim: 64, n_layers: 2, n_heads: 4, n_kv_heads: 1, head_dim: 16, hidden_dim: 160, vocab_size: 512, rope_theta: 1e6, window: [null], moe: null, max_seq_len: 128 },
  'tiny-window-list': { dim: 64, n_layers: 4, n_heads: 4, n_kv_heads: 2, head_dim: 16, hidden_dim: 128, vocab_size: 512, rope_theta: 1e4, window: [null, 6], moe: null, max_seq_len: 128 },
  'tiny-moe': { dim: 128, n_layers: 2, n_heads: 8, n_kv_heads: 2, head_dim: 16, hidden_dim: 256, vocab_size: 1024, rope_theta: 1e6, window: [null], moe: [8, 2], max_seq_len: 512 },
  'tiny-moe-top1': { dim: 128, n_layers: 2, n_heads: 8, n_kv_heads: 2, head_dim: 16, hidden_dim: 256, vocab_size: 1024, rope_theta: 1e6, window: [16], moe: [4, 1], max_seq_len: 512 },
};

/** llama.cpp's minimal vocabulary (<unk>, <s>, </s>, 256 byte tokens) is 259; the project asks for 512. */
const MIN_TINY_VOCAB = 512;

const shipped = shippedModelConfigs();
const load = (name: string) => loadModelConfig(shipped.find((s) => s.name === name)!.path);
const raw = (path: string) => JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;

describe('shipped model configs', () => {
  it('ships exactly the models in the expected table, sorted by name', () => {
    const names = shipped.map((s) => s.name);
    expect(names).toEqual([...names].sort());
    expect(names).toEqual(Object.keys(EXPECTED).sort());
  });

  describe.each(Object.entries(EXPECTED))('%s', (name, e) => {
    it('loads with the expected dimensions', () => {
      const m = load(name);
      expect(m.name).toBe(name);
      expect({
        dim: m.dim, n_layers: m.n_layers, n_heads: m.n_heads, n_kv_heads: m.n_kv_heads, head_dim: m.head_dim,
        hidden_dim: m.hidden_dim, vocab_size: m.vocab_size, rope_theta: m.rope_theta, max_seq_len: m.max_seq_len,
      }).toEqual({
        dim: e.dim, n_layers: e.n_layers, n_heads: e.n_heads, n_kv_heads: e.n_kv_heads, head_dim: e.head_dim,
        hidden_dim: e.hidden_dim, vocab_size: e.vocab_size, rope_theta: e.rope_theta, max_seq_len: e.max_seq_len,
      });
      expect(m.norm_eps).toBe(1e-5);
      expect(m.moe).toEqual(e.moe === null ? null : { num_experts: e.moe[0], num_experts_per_tok: e.moe[1] });
      expect(m.sliding_window).toEqual(Array.from({ length: e.n_layers }, (_, i) => e.window[i % e.window.length]));
    });

    it('writes rope_theta out instead of relying on a default', () => {
      const path = shipped.find((s) => s.name === name)!.path;
      expect(typeof raw(path).rope_theta).toBe('number');
      expect(load(name).notes.join(' ')).not.toMatch(/rope_theta absent/);
    });

    it('uses only keys that the reader understands', () => {
      expect(load(name).notes.filter((n) => n.startsWith('ignored keys'))).toEqual([]);
    });
  });
});

describe('ministral-8b', () => {
  it('expands its window list into 1 full-attention layer then 3 windowed layers, repeated over 36 layers', () => {
    const m = load('ministral-8b');
    expect(m.sliding_window).toHaveLength(36);
    m.sliding_window.forEach((w, layer) => expect(w).toBe(layer % 4 === 0 ? null : 32768));
  });

  it('keeps the list in params.json as the repeating pattern, not expanded', () => {
    expect(raw(shipped.find((s) => s.name === 'ministral-8b')!.path).sliding_window).toEqual([null, 32768, 32768, 32768]);
  });
});

describe('tiny configs serve their stated purpose', () => {
  const tiny = Object.keys(EXPECTED).filter((n) => n.startsWith('tiny-'));

  it.each(tiny)('%s has a vocabulary that fits llama.cpp\'s minimal vocabulary', (name) => {
    expect(load(name).vocab_size).toBeGreaterThanOrEqual(MIN_TINY_VOCAB);
  });

  it('tiny-dense has a head_dim that differs from dim / n_heads, with grouped-query attention', () => {
    const m = load('tiny-dense');
    expect(m.head_dim).not.toBe(m.dim / m.n_heads);
    expect(m.n_heads / m.n_kv_heads).toBe(2);
  });

  it('tiny-dense has a window shorter than its context, so tests cross it', () => {
    const m = load('tiny-dense');
    expect(m.sliding_window.every((w) => w !== null && w < m.max_seq_len)).toBe(true);
  });

  it('tiny-dense-full has no window at all, as llama.cpp cannot check one', () => {
    expect(load('tiny-dense-full').sliding_window.every((w) => w === null)).toBe(true);
  });

  it('tiny-window-list alternates full attention and a window of 6', () => {
    expect(load('tiny-window-list').sliding_window).toEqual([null, 6, null, 6]);
  });

  it('tiny-moe routes each token to 2 of 8 experts without a window', () => {
    const m = load('tiny-moe');
    expect(m.moe).toEqual({ num_experts: 8, num_experts_per_tok: 2 });
    expect(m.sliding_window.every((w) => w === null)).toBe(true);
  });

  it('tiny-moe-top1 routes each token to 1 of 4 experts under a window', () => {
    const m = load('tiny-moe-top1');
    expect(m.moe).toEqual({ num_experts: 4, num_experts_per_tok: 1 });
    expect(m.sliding_window).toEqual([16, 16]);
  });
});
