import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ControlledEvaluateInputItem, Llama, Token } from 'node-llama-cpp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ModelConfig } from '../../compiler/config/model.js';
import { normalizeParams } from '../../compiler/config/normalize.js';
import { writeGgufFromCheckpoint } from '../../compiler/weights/gguf.js';
import { writeRandomWeights } from '../../compiler/weights/random.js';
import { readSafetensorsHeader, readTensorF32, SafetensorsWriter } from '../../compiler/weights/safetensors.js';
import { referenceLogits } from '../reference/forward.js';
import { relativeL2 } from '../reference/metrics.js';
import { llamaUnavailableReason, tryLoadLlama } from '../judge/llamacpp.js';

const BASE = { dim: 64, n_layers: 2, n_heads: 4, n_kv_heads: 2, head_dim: 16, hidden_dim: 128, vocab_size: 512, norm_eps: 1e-5, rope_theta: 1e6, max_seq_len: 256 };
const DENSE = normalizeParams(BASE, '<inline>', { name: 'tiny-dense' });
const MOE = normalizeParams({ ...BASE, moe: { num_experts: 4, num_experts_per_tok: 2 } }, '<inline>', { name: 'tiny-moe' });
const TIED = normalizeParams({ ...BASE, tied_embeddings: true }, '<inline>', { name: 'tiny-tied' });

let dir: string;
const files = new Map<string, { safetensors: string; gguf: string }>();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mc-gguf-'));
  for (const [tag, model] of [['dense', DENSE], ['moe', MOE]] as const) {
    for (const dtype of ['f32', 'bf16'] as const) {
      const out = join(dir, `${tag}-${dtype}`);
      const { safetensorsPath } = await writeRandomWeights(model, out, { seed: 21, dtype });
      const gguf = join(out, 'model.gguf');
      await writeGgufFromCheckpoint(model, safetensorsPath, gguf);
      files.set(`${tag}-${dtype}`, { safetensors: safetensorsPath, gguf });
    }
  }
  const tied = join(dir, 'tied-f32');
  const { safetensorsPath } = await writeRandomWeights(TIED, tied, { seed: 21, dtype: 'f32' });
  await writeGgufFromCheckpoint(TIED, safetensorsPath, join(tied, 'model.gguf'));
  files.set('tied-f32', { safetensors: safetensorsPath, gguf: join(tied, 'model.gguf') });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

// ---- a small GGUF reader, written from ggml's docs/gguf.md, independent of the writer ----

interface ParsedGguf {
  version: number;
  metadata: Map<string, unknown>;
  tensors: Array<{ name: string; dims: number[]; type: number; offset: number }>;
  dataStart: number;
  bytes: Buffer;
}

function parseGguf(bytes: Buffer): ParsedGguf {
  let p = 0;
  const u32 = () => { const v = bytes.readUInt32LE(p); p += 4; return v; };
  const u64 = () => { const v = Number(bytes.readBigUInt64LE(p)); p += 8; return v; };
  const str = () => { const n = u64(); const s = bytes.toString('utf8', p, p + n); p += n; return s; };
  const value = (type: number): unknown => {
    switch (type) {
      case 0: return bytes.readUInt8(p++);
      case 1: return bytes.readInt8(p++);
      case 2: { const v = bytes.readUInt16LE(p); p += 2; return v; }
      case 3: { const v = bytes.readInt16LE(p); p += 2; return v; }
      case 4: return u32();
      case 5: { const v = bytes.readInt32LE(p); p += 4; return v; }
      case 6: { const v = bytes.readFloatLE(p); p += 4; return v; }
      case 7: return bytes.readUInt8(p++) !== 0;
      case 8: return str();
      case 9: { const t = u32(); const n = u64(); return Array.from({ length: n }, () => value(t)); }
      case 10: return u64();
      case 11: { const v = Number(bytes.readBigInt64LE(p)); p += 8; return v; }
      case 12: { const v = bytes.readDoubleLE(p); p += 8; return v; }
      default: throw new Error(`unknown GGUF value type ${type} at byte ${p}`);
    }
  };
  expect(bytes.toString('ascii', 0, 4)).toBe('GGUF');
  p = 4;
  const version = u32();
  const tensorCount = u64();
  const kvCount = u64();
  const metadata = new Map<string, unknown>();
  for (let i = 0; i < kvCount; i++) {
    const key = str();
    metadata.set(key, value(u32()));
  }
  const tensors = Array.from({ length: tensorCount }, () => {
    const name = str();
    const dims = Array.from({ length: u32() }, () => u64());
    return { name, dims, type: u32(), offset: u64() };
  });
  const alignment = (metadata.get('general.alignment') as number | undefined) ?? 32;
  const dataStart = Math.ceil(p / alignment) * alignment;
  return { version, metadata, tensors, dataStart, bytes };
}

const TYPE_BYTES: Record<number, number> = { 0: 4, 1: 2, 30: 2 };

function tensorBytes(g: ParsedGguf, name: string): Buffer {
  const t = g.tensors.find((x) => x.name === name);
  if (t === undefined) throw new Error(`no tensor ${name}`);
  const n = t.dims.reduce((a, b) => a * b, 1) * TYPE_BYTES[t.type]!;
  return g.bytes.subarray(g.dataStart + t.offset, g.dataStart + t.offset + n);
}

async function checkpointBytes(path: string, name: string): Promise<Buffer> {
  const header = await readSafetensorsHeader(path);
  const info = header.tensors.get(name)!;
  return (await readFile(path)).subarray(info.offset, info.offset + info.end - info.begin);
}

async function parsed(key: string): Promise<ParsedGguf> {
  return parseGguf(await readFile(files.get(key)!.gguf));
}

describe('writeGgufFromCheckpoint', () => {
  it('writes a GGUF v3 header with the llama metadata of the model', async () => {
    const g = await parsed('moe-bf16');
    expect(g.version).toBe(3);
    const m = g.metadata;
    expect(m.get('general.architecture')).toBe('llama');
    expect(m.get('general.name')).toBe('tiny-moe');
    expect(m.get('general.alignment')).toBe(32);
    expect(m.get('llama.context_length')).toBe(256);
    expect(m.get('llama.embedding_length')).toBe(64);
    expect(m.get('llama.block_count')).toBe(2);
    expect(m.get('llama.feed_forward_length')).toBe(128);
    expect(m.get('llama.attention.head_count')).toBe(4);
    expect(m.get('llama.attention.head_count_kv')).toBe(2);
    expect(m.get('llama.attention.layer_norm_rms_epsilon')).toBe(Math.fround(1e-5));
    expect(m.get('llama.rope.freq_base')).toBe(1e6);
    expect(m.get('llama.attention.key_length')).toBe(16);
    expect(m.get('llama.attention.value_length')).toBe(16);
    expect(m.get('llama.rope.dimension_count')).toBe(16);
    expect(m.get('llama.vocab_size')).toBe(512);
    expect(m.get('llama.expert_count')).toBe(4);
    expect(m.get('llama.expert_used_count')).toBe(2);
  });

  it('embeds a minimal llama vocabulary: <unk>, <s>, </s>, 256 byte tokens, then fillers', async () => {
    const m = (await parsed('dense-f32')).metadata;
    const tokens = m.get('tokenizer.ggml.tokens') as string[];
    const types = m.get('tokenizer.ggml.token_type') as number[];
    expect(m.get('tokenizer.ggml.model')).toBe('llama');
    expect(tokens).toHaveLength(512);
    expect(types).toHaveLength(512);
    expect(m.get('tokenizer.ggml.scores') as number[]).toHaveLength(512);
    expect(tokens.slice(0, 4)).toEqual(['<unk>', '<s>', '</s>', '<0x00>']);
    expect(tokens[258]).toBe('<0xFF>');
    expect(types.slice(0, 5)).toEqual([2, 3, 3, 6, 6]);
    expect(types[300]).toBe(1);
    expect(new Set(tokens).size).toBe(512);
    expect([m.get('tokenizer.ggml.bos_token_id'), m.get('tokenizer.ggml.eos_token_id')]).toEqual([1, 2]);
  });

  it('lists every tensor under its llama.cpp name with dims fastest first, data aligned to 32 bytes', async () => {
    const g = await parsed('moe-bf16');
    const byName = new Map(g.tensors.map((t) => [t.name, t]));
    expect(byName.get('token_embd.weight')!.dims).toEqual([64, 512]);
    expect(byName.get('blk.0.attn_q.weight')!.dims).toEqual([64, 64]);
    expect(byName.get('blk.1.attn_k.weight')!.dims).toEqual([64, 32]);
    expect(byName.get('blk.0.attn_output.weight')!.dims).toEqual([64, 64]);
    expect(byName.get('blk.0.ffn_gate_inp.weight')!.dims).toEqual([64, 4]);
    expect(byName.get('blk.0.ffn_gate_exps.weight')!.dims).toEqual([64, 128, 4]);
    expect(byName.get('blk.0.ffn_down_exps.weight')!.dims).toEqual([128, 64, 4]);
    expect(byName.get('blk.0.ffn_up_exps.weight')!.dims).toEqual([64, 128, 4]);
    expect(byName.get('output_norm.weight')!.dims).toEqual([64]);
    expect(byName.get('output.weight')!.dims).toEqual([64, 512]);
    expect(g.tensors).toHaveLength(1 + 2 * 10 + 2);
    expect(g.dataStart % 32).toBe(0);
    expect(g.tensors.every((t) => t.offset % 32 === 0)).toBe(true);
    const dense = await parsed('dense-f32');
    expect(dense.tensors.map((t) => t.name).filter((n) => n.startsWith('blk.0.'))).toEqual([
      'blk.0.attn_norm.weight', 'blk.0.attn_q.weight', 'blk.0.attn_k.weight', 'blk.0.attn_v.weight', 'blk.0.attn_output.weight',
      'blk.0.ffn_norm.weight', 'blk.0.ffn_gate.weight', 'blk.0.ffn_down.weight', 'blk.0.ffn_up.weight',
    ]);
  });

  it('copies tensor bytes unchanged, keeping the checkpoint dtype', async () => {
    for (const key of ['dense-f32', 'dense-bf16']) {
      const g = await parsed(key);
      const st = files.get(key)!.safetensors;
      expect(g.tensors.find((t) => t.name === 'blk.1.ffn_down.weight')!.type).toBe(key.endsWith('f32') ? 0 : 30);
      expect(tensorBytes(g, 'blk.1.ffn_down.weight').equals(await checkpointBytes(st, 'layers.1.feed_forward.w2.weight'))).toBe(true);
      expect(tensorBytes(g, 'token_embd.weight').equals(await checkpointBytes(st, 'tok_embeddings.weight'))).toBe(true);
    }
  });

  it('stacks the experts as the slowest dimension, expert j at slice j', async () => {
    const g = await parsed('moe-bf16');
    const st = files.get('moe-bf16')!.safetensors;
    const down = tensorBytes(g, 'blk.1.ffn_down_exps.weight');
    const slice = down.byteLength / 4;
    for (let j = 0; j < 4; j++) {
      expect(down.subarray(j * slice, (j + 1) * slice).equals(await checkpointBytes(st, `layers.1.feed_forward.experts.${j}.w2.weight`))).toBe(true);
    }
  });

  it('stores norms and the MoE router as f32, converted exactly from a bf16 checkpoint', async () => {
    const g = await parsed('moe-bf16');
    const st = files.get('moe-bf16')!.safetensors;
    const header = await readSafetensorsHeader(st);
    for (const [gguf, official] of [['blk.0.attn_norm.weight', 'layers.0.attention_norm.weight'], ['output_norm.weight', 'norm.weight'],
      ['blk.1.ffn_gate_inp.weight', 'layers.1.feed_forward.gate.weight']] as const) {
      expect(g.tensors.find((t) => t.name === gguf)!.type).toBe(0);
      const bytes = tensorBytes(g, gguf);
      const stored = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
      expect(Array.from(stored)).toEqual(Array.from(await readTensorF32(st, header.tensors.get(official)!)));
    }
  });

  it('refuses a checkpoint whose shapes disagree with params.json, naming the tensor', async () => {
    const wider = normalizeParams({ ...BASE, hidden_dim: 256 }, '<inline>', { name: 'wider' });
    await expect(writeGgufFromCheckpoint(wider, files.get('dense-f32')!.safetensors, join(dir, 'wider.gguf')))
      .rejects.toThrow(/tensor "layers\.0\.feed_forward\.w1\.weight": has shape \[128,64\] but params\.json implies \[256,64\]/);
  });

  it('refuses a checkpoint that lacks a tensor or holds one the model does not have', async () => {
    await expect(writeGgufFromCheckpoint(MOE, files.get('dense-f32')!.safetensors, join(dir, 'moe.gguf')))
      .rejects.toThrow(/tensor "layers\.0\.feed_forward\.gate\.weight": is missing/);
    const path = join(dir, 'extra.safetensors');
    const header = await readSafetensorsHeader(files.get('dense-f32')!.safetensors);
    const specs = [...header.tensors.values()].map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape }));
    const writer = await SafetensorsWriter.create(path, [...specs, { name: 'vision.weight', dtype: 'F32', shape: [1] }]);
    for (const s of specs) await writer.write(s.name, await checkpointBytes(files.get('dense-f32')!.safetensors, s.name));
    await writer.write('vision.weight', new Uint8Array(4));
    await writer.close();
    await expect(writeGgufFromCheckpoint(DENSE, path, join(dir, 'extra.gguf'))).rejects.toThrow(/tensor "vision\.weight": is not part of this model/);
  });

  it('refuses a vocabulary too small for the byte tokens llama.cpp expects', async () => {
    const small = normalizeParams({ ...BASE, vocab_size: 100 }, '<inline>', { name: 'small' });
    await expect(writeGgufFromCheckpoint(small, files.get('dense-f32')!.safetensors, join(dir, 'small.gguf')))
      .rejects.toThrow(/vocab_size: is 100, below the 259 tokens/);
  });
});

describe('llama.cpp reads the GGUF', () => {
  const tokens = [1, 17, 300, 42, 511, 5, 259];

  /** log-softmax of the float64 reference: what llama.cpp's probabilities must reproduce. */
  async function referenceLogProbs(model: ModelConfig, safetensors: string): Promise<Float64Array[]> {
    const header = await readSafetensorsHeader(safetensors);
    const weights = new Map<string, Float32Array>();
    for (const info of header.tensors.values()) weights.set(info.name, await readTensorF32(safetensors, info));
    return referenceLogits(model, (name) => weights.get(name)!, tokens).map((logits) => {
      const max = logits.reduce((a, b) => Math.max(a, b), -Infinity);
      const lse = max + Math.log(logits.reduce((a, b) => a + Math.exp(b - max), 0));
      return logits.map((x) => x - lse);
    });
  }

  /**
   * Next-token log-probabilities per position. node-llama-cpp 3.21 hands out probabilities, not raw
   * logits; with temperature 1 and every truncation off they are softmax(logits) over the whole
   * vocabulary. F32 KV cache: the default f16 cache alone would cost ~1e-4.
   */
  async function llamaLogProbs(llama: Llama, gguf: string): Promise<Float64Array[]> {
    const model = await llama.loadModel({ modelPath: gguf, gpuLayers: 0 });
    try {
      const context = await model.createContext({
        contextSize: 64, batchSize: tokens.length, flashAttention: false,
        experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32',
      });
      try {
        const options = { temperature: 1, topK: 0, topP: 1, minP: 0 };
        const input: ControlledEvaluateInputItem[] = tokens.map((t) => [t as Token, { generateNext: { probabilities: true, options } }]);
        const results = await context.getSequence().controlledEvaluate(input);
        return tokens.map((_, p) => {
          const probs = results[p]?.next.probabilities;
          if (probs === undefined || probs.size !== BASE.vocab_size) throw new Error(`no full distribution for position ${p}`);
          return Float64Array.from({ length: BASE.vocab_size }, (_, t) => Math.log(probs.get(t as Token) ?? 0));
        });
      } finally {
        await context.dispose();
      }
    } finally {
      await model.dispose();
    }
  }

  it.for([['dense', DENSE], ['moe', MOE], ['tied', TIED]] as const)('evaluates the f32 %s conversion as the float64 reference does', async ([tag, model], ctx) => {
    const llama = await tryLoadLlama();
    if (llama === null) return ctx.skip(llamaUnavailableReason());
    const { safetensors, gguf } = files.get(`${tag}-f32`)!;
    const expected = await referenceLogProbs(model, safetensors);
    const actual = await llamaLogProbs(llama, gguf);
    // Measured ~1e-7 (float32 arithmetic); a misplaced tensor or expert gives O(1).
    for (let p = 0; p < tokens.length; p++) expect(relativeL2(actual[p]!, expected[p]!), `position ${p}`).toBeLessThan(1e-5);
  });

  it.for(['dense', 'moe'] as const)('loads the bf16 %s conversion without warnings', async (tag, ctx) => {
    const llama = await tryLoadLlama();
    if (llama === null) return ctx.skip(llamaUnavailableReason());
    const model = await llama.loadModel({ modelPath: files.get(`${tag}-bf16`)!.gguf, gpuLayers: 0 });
    try {
      expect(model.getWarnings()).toEqual([]);
      expect(model.tokens.bos).toBe(1);
      expect(model.fileInsights.trainContextSize).toBe(256);
    } finally {
      await model.dispose();
    }
  });
});
