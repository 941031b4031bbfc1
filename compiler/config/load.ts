import { readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ConfigError, showValue } from '../errors.js';
import type { ModelConfig } from './model.js';
import { nameFromSource, normalizeParams, type NormalizeOptions } from './normalize.js';
import { jsonPath, parseStrictJson, StrictJsonError } from './strict-json.js';

/** A params.json larger than this is not a config (real ones are under 1 KiB). */
const MAX_PARAMS_BYTES = 1 << 20;

/** Resolves `path` (a params.json or a model directory holding one) to the params.json file. */
export function resolveParamsPath(path: string): string {
  const abs = resolve(path);
  let stat;
  try {
    stat = statSync(abs);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new ConfigError(path, undefined, 'no such file or directory', 'pass a params.json or a model directory that holds one');
    }
    throw new ConfigError(path, undefined, `cannot be read (${code ?? String(err)})`, 'check the path and its permissions');
  }
  if (stat.isDirectory()) {
    const inside = join(abs, 'params.json');
    let kind: ReturnType<typeof statSync> | undefined;
    try {
      kind = statSync(inside);
    } catch {
      /* reported below */
    }
    if (kind?.isFile()) return inside;
    if (kind !== undefined) {
      // A FIFO would block the read forever, a device (/dev/zero) never end: named, not read.
      throw new ConfigError(join(path, 'params.json'), undefined, `is ${kind.isDirectory() ? 'a directory' : 'not a regular file'}`, 'make params.json the model\'s config file');
    }
    throw new ConfigError(path, undefined, 'the directory has no params.json', 'pass a model directory with params.json, or the file itself');
  }
  if (!stat.isFile()) throw new ConfigError(path, undefined, 'is not a regular file', 'pass a params.json file');
  if (stat.size > MAX_PARAMS_BYTES) {
    throw new ConfigError(path, undefined, `is ${stat.size} bytes, too large for a params.json`, 'pass the model\'s params.json, not a weights file');
  }
  return abs;
}

/**
 * Parses JSON text, turning every problem into a one-line ConfigError: bad syntax, a key that
 * appears twice in one object (JSON.parse would silently keep the last; mistral-inference, via
 * Python's json, too, but other tools may keep the first), nesting no params.json needs.
 */
export function parseParamsText(text: string, source: string): unknown {
  try {
    return parseStrictJson(text);
  } catch (err) {
    if (!(err instanceof StrictJsonError)) throw err;
    const p = err.problem;
    if (p.kind === 'duplicate') {
      throw new ConfigError(source, showField(jsonPath([...p.at, p.key])), 'appears twice in one object (JSON.parse keeps the last silently, other readers the first)',
        `keep one ${showValue(p.key)} and delete the other`);
    }
    if (p.kind === 'depth') {
      // Named by its top-level field: the full path of a deep value is as long as its depth.
      throw new ConfigError(source, p.at.length === 0 ? undefined : showField(jsonPath(p.at.slice(0, 1))), `nests deeper than ${p.limit} levels`, 'a params.json holds numbers, lists and a flat "moe" object; remove the nesting');
    }
    throw new ConfigError(source, undefined, `is not valid JSON (${p.reason})`, 'fix the JSON syntax (e.g. run it through `node -e "JSON.parse(require(\'fs\').readFileSync(0))"`)');
  }
}

/** A JSON path as a message field: plain when it is, else quoted and shortened like any value. */
function showField(path: string): string {
  return /^[\w.[\]-]{1,80}$/.test(path) ? path : showValue(path);
}

/** The bytes of a params.json as text; invalid UTF-8 is refused (Python's json.load refuses it too). */
export function decodeParamsBytes(bytes: Uint8Array, source: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new ConfigError(source, undefined, 'is not valid UTF-8', 'save params.json as UTF-8 text');
  }
}

/** Reads, validates and normalizes a params.json (or model directory). */
export function loadModelConfig(path: string, options: NormalizeOptions = {}): ModelConfig {
  const file = resolveParamsPath(path);
  // Messages and the plan name the file as the user wrote it, not as this machine resolves it.
  const shown = file.endsWith('params.json') && !path.endsWith('.json') ? join(path, 'params.json') : path;
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (err) {
    // Between statSync and here the file may have gone, or be unreadable (EACCES, EISDIR).
    throw new ConfigError(shown, undefined, `cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})`, 'check the path and its permissions');
  }
  if (bytes.byteLength > MAX_PARAMS_BYTES) {
    throw new ConfigError(shown, undefined, `is ${bytes.byteLength} bytes, too large for a params.json`, 'pass the model\'s params.json, not a weights file');
  }
  // Named from the resolved file, so that ".", "./params.json" and "../tiny-moe" name one model
  // (and one cache entry) alike.
  return normalizeParams(parseParamsText(decodeParamsBytes(bytes, shown), shown), shown, { ...options, name: options.name ?? nameFromSource(file) });
}
