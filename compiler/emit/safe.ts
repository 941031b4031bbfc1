/**
 * The only ways a value reaches generated C++/CUDA: each helper checks that what it prints is a
 * number (or a plain identifier-like name) and throws otherwise, so no text from a config can
 * inject code even if validation upstream missed something.
 */
export class UnsafeValueError extends Error {}

/** A safe integer, printed in decimal. */
export function cxxInt(value: unknown): string {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw new UnsafeValueError(`not a safe integer: ${String(value)}`);
  return String(value);
}

/** A finite number, printed as JavaScript's shortest round-trip form, which is a valid C++ literal. */
export function cxxFloat(value: unknown): string {
  if (typeof value !== 'number' || !Number.isFinite(value)) throw new UnsafeValueError(`not a finite number: ${String(value)}`);
  const text = String(value);
  if (!/^-?\d+(\.\d+)?(e[+-]?\d+)?$/.test(text)) throw new UnsafeValueError(`unexpected number form: ${text}`);
  // A float constant (EPS) must not silently become an integer literal in a float context.
  return /[.e]/.test(text) ? text : `${text}.0`;
}

/** A tensor, file or specialization name: letters, digits, '.', '_', '-', '/' only. */
export function cxxName(value: unknown): string {
  if (typeof value !== 'string' || !/^[A-Za-z0-9_.\-/]{1,200}$/.test(value)) throw new UnsafeValueError(`not a plain name: ${JSON.stringify(value)}`);
  return value;
}

/** A C++ type name such as float or mc::bf16: identifiers joined by '::'. */
export function cxxType(value: unknown): string {
  if (typeof value !== 'string' || !/^[A-Za-z_]\w{0,63}(::[A-Za-z_]\w{0,63})*$/.test(value)) throw new UnsafeValueError(`not a type name: ${JSON.stringify(value)}`);
  return value;
}

/** Text for a // comment: one line, printable ASCII and the arrows/dots the plan uses, no comment closers. */
export function cxxComment(value: unknown): string {
  if (typeof value !== 'string' || /[\r\n]|\*\/|\\$/.test(value) || value.length > 300) throw new UnsafeValueError(`not a one-line comment: ${JSON.stringify(value)}`);
  return value;
}
