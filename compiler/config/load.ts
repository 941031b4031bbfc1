import { readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ConfigError } from '../errors.js';
import type { ModelConfig } from './model.js';
import { normalizeParams, type NormalizeOptions } from './normalize.js';

/** A params.json larger than this is not a config (real ones are under 1 KiB). */
const MAX_PARAMS_BYTES = 1 << 20;

/** Resolves `path` (a params.json or a model directory holding one) to the params.json file. */
export function resolveParamsPath(path: string): string {
  const abs = resolve(path);
  let stat;
  try {
    stat = statSync(abs);
  } catch {
    throw new ConfigError(path, undefined, 'no such file or directory', 'pass a params.json or a model directory that holds one');
  }
  if (stat.isDirectory()) {
    const inside = join(abs, 'params.json');
    try {
      if (statSync(inside).isFile()) return inside;
    } catch {
      /* reported below */
    }
    throw new ConfigError(path, undefined, 'the directory has no params.json', 'pass a model directory with params.json, or the file itself');
  }
  if (!stat.isFile()) throw new ConfigError(path, undefined, 'is not a regular file', 'pass a params.json file');
  if (stat.size > MAX_PARAMS_BYTES) {
    throw new ConfigError(path, undefined, `is ${stat.size} bytes, too large for a params.json`, 'pass the model\'s params.json, not a weights file');
  }
  return abs;
}

/** Parses JSON text, turning syntax errors into a one-line ConfigError. */
export function parseParamsText(text: string, source: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    const reason = err instanceof Error ? err.message.split('\n')[0] : String(err);
    throw new ConfigError(source, undefined, `is not valid JSON (${reason})`, 'fix the JSON syntax (e.g. run it through `node -e "JSON.parse(require(\'fs\').readFileSync(0))"`)');
  }
}

/** Reads, validates and normalizes a params.json (or model directory). */
export function loadModelConfig(path: string, options: NormalizeOptions = {}): ModelConfig {
  const file = resolveParamsPath(path);
  // Messages and the plan name the file as the user wrote it, not as this machine resolves it.
  const shown = file.endsWith('params.json') && !path.endsWith('.json') ? join(path, 'params.json') : path;
  const text = readFileSync(file, 'utf8');
  return normalizeParams(parseParamsText(text, shown), shown, options);
}
