/** What the GPU check covers (bench/gpu/cases.ts), checked without a GPU. */
import { describe, expect, it } from 'vitest';
import { KERNEL_CASES, LOGITS_CASES, LOGITS_TOLERANCE, selectDecodeCases } from '../../../bench/gpu/cases.js';

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

  it('--cases refuses a config without a decode case, naming the ones there are', () => {
    expect(() => selectDecodeCases('mistral-7b')).toThrow(/no decode case for mistral-7b; pass some of mistral-7b-v0.1, mixtral-8x7b/);
  });
});
