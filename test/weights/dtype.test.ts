import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  bf16BitsToF32, bf16ToF32, decodeToF32, encodeFromF32, f16BitsToF32, f16ToF32, f32Bits, f32BitsToBf16, f32BitsToF16,
  f32FromBits, f32ToBf16, f32ToBf16Bits, f32ToF16, f32ToF16Bits,
} from '../../compiler/weights/dtype.js';

const isNaNBits16 = (h: number, expMask: number) => (h & expMask) === expMask && (h & ~expMask & 0x7fff) !== 0;
const bf16IsNaN = (h: number) => isNaNBits16(h, 0x7f80);
const f16IsNaN = (h: number) => isNaNBits16(h, 0x7c00);

/** Finite float32 values, from their bits, so that every exponent is drawn. */
const finiteF32 = fc.integer({ min: 0, max: 0xffffffff }).map((b) => f32FromBits(b)).filter((x) => Number.isFinite(x));

describe('bfloat16', () => {
  it('round-trips every non-NaN bfloat16 through float32 unchanged', () => {
    const changed: number[] = [];
    for (let h = 0; h < 0x10000; h++) if (!bf16IsNaN(h) && f32ToBf16Bits(bf16BitsToF32(h)) !== h) changed.push(h);
    expect(changed).toEqual([]);
  });

  it('rounds halfway cases to the even neighbour', () => {
    expect(f32BitsToBf16(0x3f808000)).toBe(0x3f80); // 1 + 2^-8: tie between 0x3f80 (even) and 0x3f81
    expect(f32BitsToBf16(0x3f818000)).toBe(0x3f82); // tie between 0x3f81 and 0x3f82 (even)
    expect(f32BitsToBf16(0x3f808001)).toBe(0x3f81); // just above the tie
    expect(f32BitsToBf16(0x3f807fff)).toBe(0x3f80); // just below
    expect(f32BitsToBf16(0xbf818000)).toBe(0xbf82); // negative ties mirror positive ones
  });

  it('rounds to the nearest bfloat16 for any finite float32', () => {
    fc.assert(fc.property(finiteF32, (x) => {
      const h = f32ToBf16Bits(x);
      if (!Number.isFinite(bf16BitsToF32(h))) {
        expect(Math.abs(x)).toBeGreaterThanOrEqual(f32FromBits(0x7f7f8000)); // half an ulp above the largest bfloat16
        return;
      }
      const err = Math.abs(bf16BitsToF32(h) - x);
      for (const n of [h - 1, h + 1]) {
        if (n < 0 || n > 0xffff || ((n ^ h) & 0x8000) !== 0 || bf16IsNaN(n)) continue;
        if (Number.isFinite(bf16BitsToF32(n))) expect(err).toBeLessThanOrEqual(Math.abs(bf16BitsToF32(n) - x));
      }
    }), { numRuns: 20000 });
  });

  it('keeps NaN a NaN, also signalling NaNs whose payload lies in the dropped bits', () => {
    expect(bf16IsNaN(f32BitsToBf16(0x7fc00000))).toBe(true);
    expect(bf16IsNaN(f32BitsToBf16(0x7f800001))).toBe(true); // truncation would give +inf
    expect(bf16IsNaN(f32BitsToBf16(0xffffffff))).toBe(true); // rounding would overflow the word
    expect(f32BitsToBf16(0xff800001) & 0x8000).toBe(0x8000);
  });

  it('maps infinities and signed zeros exactly and overflows past the largest bfloat16 to infinity', () => {
    expect(f32ToBf16Bits(Infinity)).toBe(0x7f80);
    expect(f32ToBf16Bits(-Infinity)).toBe(0xff80);
    expect(f32ToBf16Bits(-0)).toBe(0x8000);
    expect(f32BitsToBf16(0x7f7fffff)).toBe(0x7f80);
    expect(f32BitsToBf16(0x7f7f7fff)).toBe(0x7f7f);
  });
});

describe('IEEE half', () => {
  it('round-trips every non-NaN half through float32 unchanged', () => {
    const changed: number[] = [];
    for (let h = 0; h < 0x10000; h++) if (!f16IsNaN(h) && f32ToF16Bits(f16BitsToF32(h)) !== h) changed.push(h);
    expect(changed).toEqual([]);
  });

  it('decodes known values, subnormals included', () => {
    expect(f16BitsToF32(0x3c00)).toBe(1);
    expect(f16BitsToF32(0xc000)).toBe(-2);
    expect(f16BitsToF32(0x7bff)).toBe(65504);
    expect(f16BitsToF32(0x0400)).toBe(2 ** -14);
    expect(f16BitsToF32(0x0001)).toBe(2 ** -24);
    expect(f16BitsToF32(0x03ff)).toBe(1023 * 2 ** -24);
    expect(f16BitsToF32(0x7c00)).toBe(Infinity);
    expect(Object.is(f16BitsToF32(0x8000), -0)).toBe(true);
  });

  it('rounds halfway cases to the even neighbour, in the normal and the subnormal range', () => {
    expect(f32ToF16Bits(1 + 2 ** -11)).toBe(0x3c00);
    expect(f32ToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02);
    expect(f32ToF16Bits(2 ** -25)).toBe(0x0000); // half the smallest subnormal: tie to 0
    expect(f32ToF16Bits(1.5 * 2 ** -25)).toBe(0x0001);
    expect(f32ToF16Bits(3 * 2 ** -25)).toBe(0x0002); // tie between 1 and 2 ulps
    expect(f32ToF16Bits(2 ** -14 - 2 ** -25)).toBe(0x0400); // largest subnormal rounds up into the normals
    expect(f32ToF16Bits(-(1 + 2 ** -11))).toBe(0xbc00);
  });

  it('overflows to infinity exactly where rounding says so', () => {
    expect(f32ToF16Bits(65519)).toBe(0x7bff);
    expect(f32ToF16Bits(65520)).toBe(0x7c00); // tie between 65504 (odd mantissa) and 2^16
    expect(f32ToF16Bits(1e10)).toBe(0x7c00);
    expect(f32ToF16Bits(-1e10)).toBe(0xfc00);
    expect(f32ToF16Bits(1e-10)).toBe(0x0000);
  });

  it('rounds to the nearest half for any finite float32', () => {
    fc.assert(fc.property(finiteF32, (x) => {
      const h = f32ToF16Bits(x);
      const value = f16BitsToF32(h);
      if (!Number.isFinite(value)) {
        expect(Math.abs(x)).toBeGreaterThanOrEqual(65520);
        return;
      }
      const err = Math.abs(value - x);
      for (const n of [h - 1, h + 1]) {
        if (n < 0 || n > 0xffff || ((n ^ h) & 0x8000) !== 0 || f16IsNaN(n)) continue;
        const other = f16BitsToF32(n);
        if (Number.isFinite(other)) expect(err).toBeLessThanOrEqual(Math.abs(other - x));
      }
    }), { numRuns: 20000 });
  });

  it('keeps NaN a NaN and infinities infinite', () => {
    expect(f16IsNaN(f32BitsToF16(0x7fc00000))).toBe(true);
    expect(f16IsNaN(f32BitsToF16(0x7f800001))).toBe(true);
    expect(f32ToF16Bits(Infinity)).toBe(0x7c00);
    expect(f32ToF16Bits(-Infinity)).toBe(0xfc00);
    expect(Number.isNaN(f16BitsToF32(0x7e00))).toBe(true);
  });
});

describe('bulk conversions', () => {
  const values = Float32Array.from([0, -0, 1, -1.5, 3.14159, 65504, 1e-6, -1e30, Infinity, -Infinity, 1 + 2 ** -8]);

  it('agree with the scalar conversions element by element', () => {
    const bf = f32ToBf16(values);
    const hf = f32ToF16(values);
    values.forEach((x, i) => {
      expect(bf[i]).toBe(f32ToBf16Bits(x));
      expect(hf[i]).toBe(f32ToF16Bits(x));
    });
    expect(Array.from(bf16ToF32(bf))).toEqual(Array.from(bf, (h) => bf16BitsToF32(h)));
    expect(Array.from(f16ToF32(hf))).toEqual(Array.from(hf, (h) => f16BitsToF32(h)));
  });

  it('preserve NaN payload bits when widening (no trip through a JS number)', () => {
    const out = bf16ToF32(Uint16Array.of(0x7fc5));
    expect(new Uint32Array(out.buffer)[0]).toBe(0x7fc50000);
    expect(f32Bits(out[0]!)).not.toBe(0); // still readable as a number
  });

  it('decode little-endian bytes at any byte offset', () => {
    for (const dtype of ['F32', 'BF16', 'F16'] as const) {
      const encoded = encodeFromF32(dtype, Float32Array.from([1, -2, 0.5]));
      const misaligned = new Uint8Array(encoded.byteLength + 1).subarray(1);
      misaligned.set(encoded);
      expect(Array.from(decodeToF32(dtype, misaligned))).toEqual([1, -2, 0.5]);
    }
  });
});
