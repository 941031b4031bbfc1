/** What the GPU check covers (bench/gpu/cases.ts), checked without a GPU. */
import { describe, expect, it } from 'vitest';
import { decodeCases, KERNEL_CASES, LENT_GPU_MIB, layersThatFit, LOGITS_CASES, LOGITS_TOLERANCE, selectDecodeCases } from '../../../bench/gpu/cases.js';

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

  it('--cases refuses a config without a decode case, naming the ones there are', () => {
    expect(() => selectDecodeCases('mistral-7b')).toThrow(/no decode case for mistral-7b; pass some of mistral-7b-v0.1, mixtral-8x7b/);
  });
});
