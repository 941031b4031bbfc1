import { defineConfig } from 'vitest/config';

/**
 * The AddressSanitizer run (test/asan/run.sh): the addon's own tests, the end-to-end tests of
 * bad input and sharded checkpoints, against runtime/addon/build-asan. No globalSetup: run.sh builds the sanitized addon,
 * and the normal one must not be rebuilt over it.
 */
export default defineConfig({
  test: {
    // The sharded checkpoints too: ModelInstance over several mappings, each weight in its own.
    include: ['test/runtime/addon.test.ts', 'test/e2e/bad-input.test.ts', 'test/e2e/sharded-checkpoint.test.ts', 'test/fuzz/mapped-file.test.ts', 'test/asan/**/*.asan-test.ts'],
    testTimeout: 120_000,
    hookTimeout: 240_000,
  },
});
