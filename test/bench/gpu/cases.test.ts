/** What the GPU check covers (bench/gpu/cases.ts), checked without a GPU. */
import { describe, expect, it } from 'vitest';
import {
  DECODE_RESERVE_GIB, decodeCases, decodePlan, KERNEL_CASES, LENT_GPU_MIB, layersThatFit, LOGITS_CASES, LOGITS_TOLERANCE, longDecodeCases, selectDecodeCases,
} from '../../../bench/gpu/cases.js';
import { DECODE_REPEATS, kvBytesPerToken } from '../../../bench/gpu/decode.js';

describe('the GPU check cases', () => {
  it('check the logits of the tiny dense and MoE models in f16 against 1e-2, like bf16', () => {
    for (const name of ['gpu-tiny-dense-f16', 'gpu-tiny-moe-f16']) expect(LOGITS_CASES.find((c) => c.name === name)?.dtype).toBe('f16');
    expect(LOGITS_TOLERANCE.f16).toBe(LOGITS_TOLERANCE.bf16);
  });

  it('check every kernel of the tiny dense and MoE models in f16', () => {
    expect(KERNEL_CASES).toContainEqual({ config: 'tiny-dense', dtype: 'f16' });
    expect(KERNEL_CASES).toContainEqual({ config: 'tiny-moe', dtype: 'f16' });
  });

  it('--cases keeps the decode cases of the named configs, all of them without a list', () => {
    expect(selectDecodeCases('mistral-7b-v0.1').map((c) => c.config)).toEqual(['mistral-7b-v0.1']);
    expect(selectDecodeCases(undefined).length).toBeGreaterThan(1);
  });

  it('benchmark Mixtral-8x7B with as many layers as fit: 26 of 32 on an 80 GB H100, all 32 on an H200', () => {
    const [h100, h200] = LENT_GPU_MIB;
    expect(layersThatFit('mixtral-8x7b', h100)).toBe(26);
    expect(layersThatFit('mixtral-8x7b', h200)).toBe(32);
    expect(decodeCases(h100).map((c) => c.label)).toEqual(['Mistral-7B (v0.1 shapes)', 'Mixtral-8x7B, 26 of 32 layers']);
    expect(decodeCases(h200).find((c) => c.config === 'mixtral-8x7b')?.label).toBe('Mixtral-8x7B');
    expect(layersThatFit('mistral-7b-v0.1', h100)).toBe(32);
    expect(selectDecodeCases('mixtral-8x7b', h200)[0]!.layers).toBeUndefined();
  });

  it('time decode after a long context too: the 7B with its 4096-token window full, Mixtral at 16384 positions', () => {
    for (const mib of LENT_GPU_MIB) {
      const cases = longDecodeCases(mib);
      expect(cases.map((c) => [c.config, c.prompt])).toEqual([['mistral-7b-v0.1', 4096], ['mixtral-8x7b', 16384]]);
      for (const c of cases) {
        const plan = decodePlan(c);
        // The timed positions (after the prompt and 8 warm-up steps) fit the context, and the prompt is prefilled in chunks.
        expect(plan.model.max_seq_len).toBeGreaterThanOrEqual(c.prompt + 8 + c.decode * DECODE_REPEATS);
        expect(plan.options.maxTokens).toBe(512);
        // The KV cache fits in what the layer count left beside the weights.
        expect(plan.kv_cache.total_bytes_per_rank).toBeLessThan(DECODE_RESERVE_GIB * 2 ** 30 / 2);
      }
    }
    expect(selectDecodeCases('mixtral-8x7b', LENT_GPU_MIB[0], 'long').map((c) => c.label)).toEqual(['Mixtral-8x7B, 26 of 32 layers, at 16384 positions']);
  });

  it('fit every timed step of the usual cases in their context of 1024', () => {
    for (const c of decodeCases(LENT_GPU_MIB[0])) {
      expect(c.prompt + 8 + c.decode * DECODE_REPEATS).toBeLessThanOrEqual(1024);
      expect(decodePlan(c).model.max_seq_len).toBe(1024);
    }
  });

  it('count the keys and values each decoded token reads: a full window, or every position so far', () => {
    const [mistral, mixtral] = longDecodeCases(LENT_GPU_MIB[0]).map(decodePlan);
    // 32 layers, 8 KV heads of 128, bf16 keys and values: 4096 bytes a position, 4096 positions in the window.
    expect(kvBytesPerToken(mistral!, 4104, 64)).toBe(32 * 4096 * 4096);
    expect(kvBytesPerToken(mistral!, 0, 2)).toBe(32 * 4096 * 1.5);
    // No window: positions 16392 ... 16455 read 16393 ... 16456 positions, 26 layers.
    expect(kvBytesPerToken(mixtral!, 16392, 64)).toBeCloseTo(26 * 4096 * (16393 + 16456) / 2, 0);
  });

  it('--cases refuses a config without a decode case, naming the ones there are', () => {
    expect(() => selectDecodeCases('mistral-7b')).toThrow(/no decode case for mistral-7b; pass some of mistral-7b-v0.1, mixtral-8x7b/);
  });
});
