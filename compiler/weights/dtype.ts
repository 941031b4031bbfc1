import { endianness } from 'node:os';

/**
 * Element types of checkpoint tensors, spelled as safetensors spells them, and exact conversions
 * between them. Conversions work on raw bit patterns (Uint16 for half types, the Uint32 view of a
 * Float32Array) so that NaN payloads survive: a JS number would canonicalize them.
 */
export type Dtype = 'F32' | 'BF16' | 'F16';

export const DTYPE_BYTES: Readonly<Record<Dtype, number>> = { F32: 4, BF16: 2, F16: 2 };

export const DTYPES: readonly Dtype[] = ['F32', 'BF16', 'F16'];

export function isDtype(value: unknown): value is Dtype {
  return value === 'F32' || value === 'BF16' || value === 'F16';
}

// safetensors and GGUF are little-endian; the typed-array views below use the host's byte order.
if (endianness() !== 'LE') throw new Error('mistral-compile reads and writes weights on little-endian hosts only');

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** The IEEE-754 single bits of `x` (rounded to float32 first). */
export function f32Bits(x: number): number {
  scratchF32[0] = x;
  return scratchU32[0]!;
}

/** The float32 whose bits are `bits`, as a JS number. */
export function f32FromBits(bits: number): number {
  scratchU32[0] = bits >>> 0;
  return scratchF32[0]!;
}

// ---- bfloat16: the top half of a float32 ----

/** float32 bits → bfloat16 bits, rounding to nearest, ties to even; NaN stays NaN (quiet bit set). */
export function f32BitsToBf16(bits: number): number {
  bits >>>= 0;
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x0040) & 0xffff;
  // Adding 0x7fff plus the lowest kept bit rounds ties to even; overflow carries into the
  // exponent, which is right (max finite rounds up to infinity). Without NaNs the sum stays
  // below 2^32 (largest: -inf, 0xff800000), so `>>>` sees it exactly.
  return (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
}

export function bf16BitsToF32Bits(h: number): number {
  return ((h & 0xffff) << 16) >>> 0;
}

export function f32ToBf16Bits(x: number): number {
  return f32BitsToBf16(f32Bits(x));
}

export function bf16BitsToF32(h: number): number {
  return f32FromBits(bf16BitsToF32Bits(h));
}

// ---- IEEE half ----

/** float32 bits → half bits, rounding to nearest, ties to even; handles subnormals, overflow to inf, NaN. */
export function f32BitsToF16(bits: number): number {
  bits >>>= 0;
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x0200 | (mant >>> 13) : 0);
  if (exp >= 113) {
    // Normal half range (unbiased exponent >= -14). Mantissa carry rolls into the exponent and,
    // past the largest half (65504), into infinity (0x7c00): both exactly what rounding asks for.
    if (exp > 142) return sign | 0x7c00;
    let h = ((exp - 112) << 10) | (mant >>> 13);
    const rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest === 0x1000 && (h & 1) !== 0)) h++;
    return sign | h;
  }
  // Half subnormals: value = m · 2^(exp-150) with the implicit bit, unit 2^-24.
  const shift = 126 - exp;
  if (exp === 0 || shift > 24) return sign; // below half the smallest subnormal: rounds to ±0
  const m = mant | 0x800000;
  let h = m >>> shift;
  const rest = m & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rest > half || (rest === half && (h & 1) !== 0)) h++;
  return sign | h;
}

/** half bits → float32 bits (exact: every half is a float32). */
export function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0;
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
  if (mant === 0) return sign >>> 0;
  // Subnormal half: normalize into a float32 normal.
  let e = 113;
  let m = mant;
  while ((m & 0x400) === 0) {
    m <<= 1;
    e--;
  }
  return (sign | (e << 23) | ((m & 0x3ff) << 13)) >>> 0;
}

export function f32ToF16Bits(x: number): number {
  return f32BitsToF16(f32Bits(x));
}

export function f16BitsToF32(h: number): number {
  return f32FromBits(f16BitsToF32Bits(h));
}

// ---- bulk conversions over typed arrays ----

function u32View(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

export function f32ToBf16(src: Float32Array, dst = new Uint16Array(src.length)): Uint16Array {
  const bits = u32View(src);
  for (let i = 0; i < bits.length; i++) dst[i] = f32BitsToBf16(bits[i]!);
  return dst;
}

export function bf16ToF32(src: Uint16Array, dst = new Float32Array(src.length)): Float32Array {
  const out = u32View(dst);
  for (let i = 0; i < src.length; i++) out[i] = src[i]! << 16;
  return dst;
}

export function f32ToF16(src: Float32Array, dst = new Uint16Array(src.length)): Uint16Array {
  const bits = u32View(src);
  for (let i = 0; i < bits.length; i++) dst[i] = f32BitsToF16(bits[i]!);
  return dst;
}

export function f16ToF32(src: Uint16Array, dst = new Float32Array(src.length)): Float32Array {
  const out = u32View(dst);
  for (let i = 0; i < src.length; i++) out[i] = f16BitsToF32Bits(src[i]!);
  return dst;
}

/**
 * Decodes little-endian `bytes` of `dtype` into `dst` (float32). `bytes` may sit at any offset:
 * a misaligned view is copied once so the typed-array view is legal.
 */
export function decodeToF32(dtype: Dtype, bytes: Uint8Array, dst = new Float32Array(bytes.byteLength / DTYPE_BYTES[dtype])): Float32Array {
  const size = DTYPE_BYTES[dtype];
  if (bytes.byteLength % size !== 0) throw new RangeError(`${bytes.byteLength} bytes is not a whole number of ${dtype} elements`);
  const aligned = bytes.byteOffset % size === 0 ? bytes : bytes.slice();
  const n = aligned.byteLength / size;
  if (dtype === 'F32') {
    dst.set(new Float32Array(aligned.buffer, aligned.byteOffset, n));
    return dst;
  }
  const halves = new Uint16Array(aligned.buffer, aligned.byteOffset, n);
  return dtype === 'BF16' ? bf16ToF32(halves, dst) : f16ToF32(halves, dst);
}

/** Encodes float32 values as little-endian bytes of `dtype`. */
export function encodeFromF32(dtype: Dtype, values: Float32Array): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const halves = dtype === 'BF16' ? f32ToBf16(values) : f32ToF16(values);
  return new Uint8Array(halves.buffer, halves.byteOffset, halves.byteLength);
}
