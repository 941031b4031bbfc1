import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import { normalizeParams } from '../../compiler/config/normalize.js';
import { PlanError } from '../../compiler/errors.js';
import { writeRandomWeights } from '../../compiler/weights/random.js';
import { loadModel } from '../../runtime/model.js';
import { relativeL2 } from '../reference/metrics.js';

let work: string;
let cacheDir: string;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'mc-tp-'));
  cacheDir = join(work, 'cache');
});

const BASE = { dim: 64, n_layers: 2, head_dim: 16, hidden_dim: 128, n_heads: 8, n_kv_heads: 4, norm_eps: 1e-5, vocab_size: 512, rope_theta: 1e6, max_seq_len: 128 };
const CASES: Array<[string, Record<string, unknown>]> = [
  ['dense GQA with a sliding window of 8', { sliding_window: 8 }],
  ['a per-layer window list', { sliding_window: [null, 6] }],
  ['n_kv_heads = 2 < TP 4 (KV heads replicated)', { n_kv_heads: 2 }],
  ['n_kv_heads = 1 (one KV head on every rank)', { n_kv_heads: 1, sliding_window: 5 }],
  ['MoE top-2 of 8', { moe: { num_experts: 8, num_experts_per_tok: 2 } }],
  ['MoE top-1 of 4 with a window', { moe: { num_experts: 4, num_experts_per_tok: 1 }, sliding_window: 7 }],
];

async function modelDir(name: string, params: Record<string, unknown>, seed: number): Promise<string> {
  const dir = join(work, name.replace(/[^a-z0-9]+/gi, '-'));
  await writeRandomWeights(normalizeParams({ ...BASE, ...params }, name), dir, { seed, dtype: 'f32' });
  return dir;
}

const tokens = Array.from({ length: 29 }, (_, i) => (i * 71 + 5) % 512);

describe('tensor parallelism on the CPU (ranks as threads, all-reduce between them)', () => {
  CASES.forEach(([name, params], i) => {
    it(`${name}: logits at TP 2 and 4 equal TP 1, in one prefill and in prefill-then-decode across the window`, async () => {
      const dir = await modelDir(name, params, 100 + i);
      const single = await loadModel(dir, { cacheDir, maxTokens: 8 });
      const expected = await single.logits(tokens);
      single.close();
      for (const tp of [2, 4] as const) {
        const model = await loadModel(dir, { tp, cacheDir, maxTokens: 8 });
        expect(model.plan.key).toMatch(new RegExp(`\\.tp${tp}$`));
        const full = await model.logits(tokens);
        full.forEach((row, t) => expect(relativeL2(row, expected[t]!)).toBeLessThanOrEqual(1e-5));
        // Prefill 5 tokens, then decode the rest one at a time: crosses every window's ring.
        const pre = await model.forward(tokens.slice(0, 5), 0, true);
        pre.forEach((row, t) => expect(relativeL2(row, expected[t]!)).toBeLessThanOrEqual(1e-5));
        for (let t = 5; t < tokens.length; t++) {
          const [row] = await model.forward([tokens[t]!], t, false);
          expect(relativeL2(row!, expected[t]!)).toBeLessThanOrEqual(1e-5);
        }
        model.close();
      }
    });
  });

  it('weights copied onto huge pages give the same bits as mapped ones, at TP 1 and 2', async () => {
    const dir = await modelDir('copied weights', { sliding_window: 6 }, 12);
    for (const tp of [1, 2] as const) {
      const mapped = await loadModel(dir, { tp, cacheDir, maxTokens: 8 });
      let copied = false;
      const copy = await loadModel(dir, { tp, cacheDir, maxTokens: 8, weights: 'copy', onProgress: (e) => { if (e.stage === 'weights') copied = e.copied; } });
      expect(copied).toBe(true);
      const [a, b] = [await mapped.logits(tokens), await copy.logits(tokens)];
      a.forEach((row, t) => expect(Buffer.from(row.buffer, row.byteOffset, row.byteLength).equals(Buffer.from(b[t]!.buffer, b[t]!.byteOffset, b[t]!.byteLength))).toBe(true));
      mapped.close();
      copy.close();
    }
  });

  it('refuses a TP size the config cannot shard, naming the field', async () => {
    const dir = await modelDir('six heads', { n_heads: 6, n_kv_heads: 2, dim: 96 }, 7);
    const error = await loadModel(dir, { tp: 4, cacheDir }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PlanError);
    expect((error as PlanError).message).toMatch(/params\.json: n_heads: n_heads = 6 cannot be sharded over --tp 4/);
  });

  it('reports the load time of every rank', async () => {
    const dir = await modelDir('progress', {}, 8);
    const seen: number[][] = [];
    const model = await loadModel(dir, { tp: 4, cacheDir, onProgress: (e) => e.stage === 'weights' && seen.push(e.rankSeconds) });
    model.close();
    expect(seen).toHaveLength(1);
    expect(seen[0]).toHaveLength(4);
  });

  it('maps weights once: peak resident memory at TP 4 stays within 16 MiB of TP 1 (92 MiB of f32 weights)', async () => {
    const dir = join(work, 'memory');
    await writeRandomWeights(normalizeParams({ ...BASE, dim: 512, n_layers: 4, head_dim: 64, hidden_dim: 2048, n_kv_heads: 4, vocab_size: 8192, max_seq_len: 64 }, 'memory'), dir, { seed: 9, dtype: 'f32' });
    const peak = async (tp: number) => {
      const child = join(import.meta.dirname, 'peak-memory-child.ts');
      const { stdout } = await execa(join(import.meta.dirname, '../../node_modules/.bin/tsx'), [child, dir, String(tp), cacheDir]);
      return Number(stdout.trim());
    };
    const one = await peak(1);
    const four = await peak(4);
    expect(one).toBeGreaterThan(92 * 2 ** 20); // the weights were really touched
    expect(four - one).toBeLessThan(16 * 2 ** 20);
  });
});
