/**
 * How many cases each property runs. CI runs a bounded, seeded number (the same cases every run,
 * so a failure reproduces); `FUZZ_RUNS=20000 npx vitest run test/fuzz` runs longer on demand, and
 * `FUZZ_SEED=…` draws other cases. fast-check prints the seed and the shrunk counterexample.
 */
import type { Parameters } from 'fast-check';

const runsOverride = process.env.FUZZ_RUNS === undefined ? undefined : Number(process.env.FUZZ_RUNS);
if (runsOverride !== undefined && (!Number.isSafeInteger(runsOverride) || runsOverride < 1)) {
  throw new Error(`FUZZ_RUNS: must be a positive integer (got ${JSON.stringify(process.env.FUZZ_RUNS)}); unset it for CI's counts`);
}
const seedOverride = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);
if (seedOverride !== undefined && !Number.isSafeInteger(seedOverride)) {
  throw new Error(`FUZZ_SEED: must be an integer (got ${JSON.stringify(process.env.FUZZ_SEED)})`);
}

/** The seed of CI's cases. */
export const FUZZ_SEED = seedOverride ?? 20261125;

/** Runs of a property: `ci` in CI, FUZZ_RUNS when set. */
export function fuzzRuns(ci: number): number {
  return runsOverride ?? ci;
}

/** fast-check parameters for a property that runs `ci` cases in CI. */
export function fuzzParameters<T>(ci: number): Parameters<T> {
  return { numRuns: fuzzRuns(ci), seed: FUZZ_SEED };
}

/** A vitest timeout for a property of `ci` cases taking about `msPerCase` each (never below 60 s). */
export function fuzzTimeout(ci: number, msPerCase: number): number {
  return Math.max(60_000, fuzzRuns(ci) * msPerCase * 3);
}
