import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkpointTensors } from '../../compiler/config/checkpoint.js';
import { loadModelConfig } from '../../compiler/config/load.js';
import type { ModelConfig } from '../../compiler/config/model.js';
import { normalizeParams } from '../../compiler/config/normalize.js';
import { f32ToBf16Bits } from '../../compiler/weights/dtype.js';
import { collapseWindows } from '../../compiler/config/official-params.js';
import { writeRandomWeights } from '../../compiler/weights/random.js';
import { readSafetensorsHeader, readTensorF32 } from '../../compiler/weights/safetensors.js';

const BASE = { dim: 64, n_layers: 2, n_heads: 4, n_kv_heads: 2, head_dim: 16, hidden_dim: 128, vocab_size: 512, norm_eps: 1e-5, rope_theta: 1e6, max_seq_len: 256 };
const dense = (extra: Record<string, unknown> = {}, name = 'tiny-dense') => normalizeParams({ ...BASE, ...extra }, '<inline>', { name });
const moe = () => normalizeParams({ ...BASE, moe: { num_experts: 4, num_experts_per_tok: 2 } }, '<inline>', { name: 'tiny-moe' });

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mc-random-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function sha256(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex');
}

async function write(model: ModelConfig, tag: string, seed: number, dtype: 'f32' | 'bf16' = 'bf16') {
  return writeRandomWeights(model, join(dir, tag), { seed, dtype });
}

/** The numbers a params.json determines: everything but where it came from and what was noted. */
function numbers(m: ModelConfig) {
  const { name: _n, source: _s, notes: _notes, ...rest } = m;
  return rest;
}

describe('writeRandomWeights', () => {
  it('gives byte-identical files for the same seed', async () => {
    const a = await write(dense(), 'same-a', 7);
    const b = await write(dense(), 'same-b', 7);
    expect(await sha256(a.safetensorsPath)).toBe(await sha256(b.safetensorsPath));
    expect(await readFile(a.paramsPath, 'utf8')).toBe(await readFile(b.paramsPath, 'utf8'));
  });

  it('gives different values for a different seed', async () => {
    const a = await write(dense(), 'seed-1', 1);
    const b = await write(dense(), 'seed-2', 2);
    expect(await sha256(a.safetensorsPath)).not.toBe(await sha256(b.safetensorsPath));
    const ha = await readSafetensorsHeader(a.safetensorsPath);
    const hb = await readSafetensorsHeader(b.safetensorsPath);
    for (const name of ha.tensors.keys()) {
      const x = await readTensorF32(a.safetensorsPath, ha.tensors.get(name)!);
      const y = await readTensorF32(b.safetensorsPath, hb.tensors.get(name)!);
      expect(x.some((v, i) => v !== y[i]), name).toBe(true);
    }
  });

  it.each([['dense', dense()], ['MoE', moe()], ['tied embeddings', dense({ tied_embeddings: true }, 'tied')]])(
    'writes the tensors of checkpointTensors, in order, with their names and shapes (%s)', async (tag, model) => {
      const { safetensorsPath } = await write(model, `layout-${tag}`, 3, 'f32');
      const header = await readSafetensorsHeader(safetensorsPath);
      expect([...header.tensors.values()].map((t) => [t.name, t.shape, t.dtype]))
        .toEqual(checkpointTensors(model).map((t) => [t.name, t.shape, 'F32']));
      expect(header.metadata).toEqual({ format: 'pt', written_by: 'mistral-compile random-weights' });
    });

  it.each([
    ['dense, full attention', dense()],
    ['MoE', moe()],
    ['one window for every layer', dense({ sliding_window: 32 })],
    ['a per-layer window pattern', dense({ n_layers: 6, sliding_window: [null, 16, 16] })],
    ['tied embeddings and a short context', dense({ tied_embeddings: true, max_seq_len: 100, rope_theta: 1e4 })],
  ])('writes a params.json that loads back to the same numbers (%s)', async (tag, model) => {
    await write(model, `params-${tag.replace(/\W+/g, '-')}`, 1);
    const back = loadModelConfig(join(dir, `params-${tag.replace(/\W+/g, '-')}`));
    expect(numbers(back)).toEqual(numbers(model));
  });

  it('draws each tensor from (seed, name), so values do not depend on what comes before', async () => {
    const two = await write(dense(), 'order-2', 5, 'f32');
    const three = await write(dense({ n_layers: 3, moe: null }), 'order-3', 5, 'f32');
    const h2 = await readSafetensorsHeader(two.safetensorsPath);
    const h3 = await readSafetensorsHeader(three.safetensorsPath);
    for (const name of ['tok_embeddings.weight', 'layers.1.attention.wq.weight', 'norm.weight', 'output.weight']) {
      const a = await readTensorF32(two.safetensorsPath, h2.tensors.get(name)!);
      const b = await readTensorF32(three.safetensorsPath, h3.tensors.get(name)!);
      expect(Array.from(a), name).toEqual(Array.from(b));
    }
  });

  it('writes bf16 values that are the f32 values rounded to nearest even', async () => {
    const f32 = await write(dense(), 'dtype-f32', 9, 'f32');
    const bf16 = await write(dense(), 'dtype-bf16', 9, 'bf16');
    const hf = await readSafetensorsHeader(f32.safetensorsPath);
    const hb = await readSafetensorsHeader(bf16.safetensorsPath);
    const name = 'layers.0.feed_forward.w2.weight';
    expect(hb.tensors.get(name)!.dtype).toBe('BF16');
    const wide = await readTensorF32(f32.safetensorsPath, hf.tensors.get(name)!);
    const narrow = await readTensorF32(bf16.safetensorsPath, hb.tensors.get(name)!);
    expect(Array.from(narrow, (v) => f32ToBf16Bits(v))).toEqual(Array.from(wide, (v) => f32ToBf16Bits(v)));
  });

  it('scales values like a trained model: matrices 1/sqrt(fan_in), embeddings 1, norms near but not equal to 1', async () => {
    const { safetensorsPath } = await write(dense(), 'stats', 11, 'f32');
    const header = await readSafetensorsHeader(safetensorsPath);
    const stats = async (name: string) => {
      const v = await readTensorF32(safetensorsPath, header.tensors.get(name)!);
      const mean = v.reduce((a, b) => a + b, 0) / v.length;
      const std = Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / v.length);
      return { mean, std, distinct: new Set(v).size };
    };
    const w2 = await stats('layers.0.feed_forward.w2.weight'); // [dim, hidden]: fan_in 128
    expect(w2.mean).toBeCloseTo(0, 2);
    expect(w2.std).toBeGreaterThan((1 / Math.sqrt(128)) * 0.95);
    expect(w2.std).toBeLessThan((1 / Math.sqrt(128)) * 1.05);
    const emb = await stats('tok_embeddings.weight');
    expect(emb.std).toBeGreaterThan(0.97);
    expect(emb.std).toBeLessThan(1.03);
    const norm = await stats('layers.1.ffn_norm.weight');
    expect(norm.mean).toBeGreaterThan(0.95);
    expect(norm.mean).toBeLessThan(1.05);
    expect(norm.std).toBeGreaterThan(0.05);
    expect(norm.distinct).toBeGreaterThan(32);
  });

  it('reports progress up to the total file size', async () => {
    const calls: Array<[number, number]> = [];
    const result = await writeRandomWeights(moe(), join(dir, 'progress'), { seed: 1, dtype: 'bf16', onProgress: (w, t) => calls.push([w, t]) });
    expect(calls.length).toBeGreaterThan(0);
    expect(calls.every(([, t]) => t === result.bytes)).toBe(true);
    expect(calls.every(([w], i) => i === 0 || w >= calls[i - 1]![0])).toBe(true);
    expect(calls[calls.length - 1]![0]).toBe(result.bytes);
  });

  it('refuses a seed that is not a non-negative integer', async () => {
    await expect(writeRandomWeights(dense(), join(dir, 'bad-seed'), { seed: 1.5, dtype: 'f32' })).rejects.toThrow(/--seed: must be a non-negative integer/);
  });
});

describe('collapseWindows', () => {
  it('writes null when no layer has a window, an int when all share one, else the shortest repeating pattern', () => {
    expect(collapseWindows([null, null])).toBeNull();
    expect(collapseWindows([4096, 4096, 4096])).toBe(4096);
    expect(collapseWindows([null, 16, 16, null, 16, 16])).toEqual([null, 16, 16]);
    expect(collapseWindows([8, 16, 8, 16])).toEqual([8, 16]);
    expect(collapseWindows([8, 16, 16])).toEqual([8, 16, 16]);
  });
});
