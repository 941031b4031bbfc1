import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

import { packageRoot } from '../compiler/paths.js';
import type { NativeAddon } from './native.js';

/** Where `npm run build:addon` (cmake-js compile -d runtime/addon) puts the addon. */
export function nativeAddonPath(): string {
  return join(packageRoot(), 'runtime', 'addon', 'build', 'Release', 'mc_runtime.node');
}

let cached: NativeAddon | undefined;

/** The runtime addon, loaded once per process. Throws with the fix when it has not been built. */
export function loadNativeAddon(): NativeAddon {
  if (cached !== undefined) return cached;
  const path = nativeAddonPath();
  if (!existsSync(path)) {
    throw new Error(`the runtime addon is not built: ${path} is missing; run npm run build:addon`);
  }
  // ESM cannot import a .node file; createRequire gives CommonJS's loader for it.
  const require = createRequire(import.meta.url);
  cached = require(path) as NativeAddon;
  return cached;
}
