import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

import { BuildError } from '../compiler/build/errors.js';
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
    // In a checkout (the TypeScript sources beside it) the package's own script builds it; installed
    // as a dependency, npm rebuild runs the package's install script from the user's project.
    const checkout = existsSync(join(packageRoot(), 'compiler'));
    throw new BuildError(path, undefined, 'is missing: the runtime addon is not built',
      checkout ? 'run npm run build:addon (npm ci runs it; it needs cmake and g++)' : 'run npm rebuild mistral-compile in your project (it needs cmake and g++)');
  }
  // ESM cannot import a .node file; createRequire gives CommonJS's loader for it.
  const require = createRequire(import.meta.url);
  cached = require(path) as NativeAddon;
  return cached;
}
