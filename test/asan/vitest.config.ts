import { defineConfig } from 'vitest/config';

/**
 * The AddressSanitizer run (test/asan/run.sh): the addon's own tests and the end-to-end tests of
 * bad input, against runtime/addon/build-asan. No globalSetup: run.sh builds the sanitized addon,
 * and the normal one must not be rebuilt over it.
 */
export default defineConfig({
  test: {
    include: ['test/runtime/addon.test.ts', 'test/e2e/bad-input.test.ts', 'test/fuzz/mapped-file.test.ts', 'test/asan/**/*.asan-test.ts'],
    testTimeout: 120_000,
    hookTimeout: 240_000,
  },
});
