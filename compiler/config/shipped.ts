import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../paths.js';

export interface ShippedModelConfig {
  /** The model directory's name, e.g. "mixtral-8x7b". */
  name: string;
  /** Absolute path of its params.json. */
  path: string;
}

/** The model configs shipped in configs/models/<name>/params.json, sorted by name. */
export function shippedModelConfigs(): ShippedModelConfig[] {
  const dir = join(packageRoot(), 'configs', 'models');
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && existsSync(join(dir, e.name, 'params.json')))
    .map((e) => ({ name: e.name, path: join(dir, e.name, 'params.json') }))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
