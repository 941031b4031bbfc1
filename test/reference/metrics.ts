/**
 * Error measures for comparing a computed tensor with its float64 reference.
 */

/**
 * ‖actual − expected‖₂ / ‖expected‖₂, accumulated in float64.
 *
 * Infinity when `actual` holds any NaN or ±Infinity (so a poisoned, unwritten output can never pass a
 * tolerance), or when the lengths differ. When `expected` is all zeros the absolute L2 norm of the
 * difference is returned instead (0 for an exact match).
 */
export function relativeL2(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) return Infinity;
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i]!;
    if (!Number.isFinite(a)) return Infinity;
    const e = expected[i]!;
    diff += (a - e) * (a - e);
    norm += e * e;
  }
  return norm === 0 ? Math.sqrt(diff) : Math.sqrt(diff / norm);
}

/** Largest |actual − expected|; Infinity when `actual` holds a non-finite value or lengths differ. */
export function maxAbsDiff(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) return Infinity;
  let worst = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i]!;
    if (!Number.isFinite(a)) return Infinity;
    worst = Math.max(worst, Math.abs(a - expected[i]!));
  }
  return worst;
}
