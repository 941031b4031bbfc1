import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Tests that need a GPU run through `npm run gpu:check` on a GPU machine, never in CI.
    exclude: ['test/gpu/**', 'node_modules/**', 'dist/**'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Two test files at a time even on CI's 2 cores (vitest's default there is one, cores - 1):
    // the compiler-heavy files already run two builds at a time, but most files are one thread,
    // and one worker left a core idle a quarter of the time. Measured on this 2-core machine: one
    // worker 920 s at 1.73 cores busy; two workers 806 s at 1.97 (the slowest test then took 57%
    // of its timeout).
    maxWorkers: Math.max(2, availableParallelism() - 1),
  },
});
