import { join } from 'node:path';

import { execa } from 'execa';

import { packageRoot } from '../compiler/paths.js';

/**
 * Runs once before every test file: brings runtime/addon/build up to date (incremental, about a
 * second when nothing changed), so that no test runs against a stale build of edited C++ and no
 * two test files rebuild it at once. Same command as `npm run build:addon`.
 */
export default async function setup(): Promise<void> {
  const root = packageRoot();
  await execa(join(root, 'node_modules', '.bin', 'cmake-js'), ['compile', '-d', join(root, 'runtime', 'addon')], { cwd: root });
}
