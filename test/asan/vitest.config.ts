import { defineConfig } from 'vitest/config';

/**
 * The AddressSanitizer run (test/asan/run.sh): the addon's own tests, the end-to-end tests of
 * bad input, sharded checkpoints and several sequences on one model (KV snapshots), against runtime/addon/build-asan. No globalSetup: run.sh builds the sanitized addon,
 * and the normal one must not be rebuilt over it.
 */
export default defineConfig({
  test: {
    // The sharded checkpoints too: ModelInstance over several mappings, each weight in its own.
    // The KV snapshots too: their workers copy into and out of JS buffers, one thread a rank.
    // And the native scan of each generated token's logits (its 8-wide loads stop at the row's end).
    // And worker threads terminated mid-forward (the model's thread still writing their logits).
    include: ['test/runtime/addon.test.ts', 'test/runtime/worker-threads.test.ts', 'test/runtime/sampling.test.ts', 'test/e2e/bad-input.test.ts', 'test/e2e/sharded-checkpoint.test.ts', 'test/e2e/sequences.test.ts', 'test/fuzz/mapped-file.test.ts', 'test/asan/**/*.asan-test.ts'],
    testTimeout: 120_000,
    hookTimeout: 240_000,
    // Two files at a time, as the main run (vitest's default on CI's 2 cores is one worker: this
    // stage then took ~94 s for ~73 s of files, each mostly one thread).
    maxWorkers: 2,
  },
});
