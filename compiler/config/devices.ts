import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, extname, join, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { ConfigError, showValue } from '../errors.js';
import { packageRoot } from '../paths.js';

/**
 * A device profile: the peak numbers the planner uses for roofline estimates (decode is bound by
 * weight bytes / memory bandwidth, prefill by matrix FLOP/s) and the arch the build targets.
 * One YAML file per device in configs/devices/; the file stem is the id.
 */
export type DeviceTarget = 'cuda' | 'cpu';

export interface PeakMatrixTflops {
  /** Dense (no 2:4 sparsity) TFLOP/s of bf16 matrix multiply. */
  bf16: number;
  f16: number;
  /** Plain FP32 (on GPUs: not tensor cores / TF32). */
  f32: number;
}

export interface DeviceProfile {
  /** The file stem, e.g. "h100-sxm"; names build artefacts, so [a-z0-9-] only. */
  id: string;
  name: string;
  target: DeviceTarget;
  /** `sm_90a` style for CUDA; a -march value for CPUs (e.g. x86-64-v4). */
  arch: string;
  memory_gib: number;
  /** GB/s, 1e9 bytes per second. */
  memory_bandwidth_gbs: number;
  peak_matrix_tflops: PeakMatrixTflops;
  /** Where the numbers come from (datasheet, measurement). */
  source: string;
}

const KEYS = ['id', 'name', 'target', 'arch', 'memory_gib', 'memory_bandwidth_gbs', 'peak_matrix_tflops', 'source'] as const;
const PEAK_KEYS = ['bf16', 'f16', 'f32'] as const;
const TARGETS: readonly DeviceTarget[] = ['cuda', 'cpu'];
/** Profiles are a few hundred bytes; anything larger is the wrong file. */
const MAX_PROFILE_BYTES = 64 * 1024;
/** id and arch reach file names and compiler flags: keep them to plain tokens. */
const ID_PATTERN = /^[a-z0-9][a-z0-9-]*$/;
const CUDA_ARCH_PATTERN = /^sm_[0-9]{2,3}[a-z]?$/;
const CPU_ARCH_PATTERN = /^[a-z0-9][a-z0-9_.-]*$/;

/** configs/devices of this package. */
export function shippedDevicesDir(): string {
  return join(packageRoot(), 'configs', 'devices');
}

/** Every profile in `dir`, sorted by id. */
export function listDeviceProfiles(dir: string = shippedDevicesDir()): DeviceProfile[] {
  return profileFiles(dir).map((file) => readDeviceProfile(file));
}

/**
 * A profile by path (anything with a slash or a .yaml/.yml ending) or by id. An id matches a file
 * stem exactly or as its first dash-separated words, so "h100" finds h100-sxm and "cpu" finds
 * cpu-epyc-2core; an id that fits several profiles is an error naming them.
 */
export function loadDeviceProfile(idOrPath: string, dir: string = shippedDevicesDir()): DeviceProfile {
  if (/[\\/]/.test(idOrPath) || /\.ya?ml$/i.test(idOrPath)) return readDeviceProfile(idOrPath);
  const query = idOrPath.trim().toLowerCase();
  const files = profileFiles(dir);
  const ids = files.map(stem);
  const exact = files.find((f) => stem(f) === query);
  if (exact !== undefined) return readDeviceProfile(exact);
  const matches = query.length > 0 ? files.filter((f) => stem(f).startsWith(`${query}-`)) : [];
  if (matches.length === 1) return readDeviceProfile(matches[0]!);
  if (matches.length > 1) {
    throw new ConfigError('--device', undefined, `${showValue(idOrPath)} fits several profiles (${matches.map(stem).join(', ')})`,
      'name one of them in full');
  }
  throw new ConfigError('--device', undefined, `no device profile ${showValue(idOrPath)} in ${dir}`,
    `use one of ${ids.join(', ')}, or a path to a .yaml profile`);
}

/** Reads and validates one profile file; every problem is a one-line ConfigError. */
export function readDeviceProfile(path: string): DeviceProfile {
  const file = resolve(path);
  let size: number;
  try {
    const st = statSync(file);
    if (!st.isFile()) throw new ConfigError(path, undefined, 'is not a regular file', 'pass a device profile .yaml file');
    size = st.size;
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(path, undefined, 'no such file', `pass an existing .yaml file or a device id such as h100`);
  }
  if (size > MAX_PROFILE_BYTES) {
    throw new ConfigError(file, undefined, `is ${size} bytes, too large for a device profile`, 'pass a device profile .yaml file');
  }
  const doc = parseDocument(readFileSync(file, 'utf8'));
  if (doc.errors.length > 0) {
    const first = doc.errors[0]!.message.split('\n')[0]!.replace(/:\s*$/, '');
    throw new ConfigError(file, undefined, `is not valid YAML (${first})`, 'fix the YAML syntax; see configs/devices/h100-sxm.yaml');
  }
  let value: unknown;
  try {
    value = doc.toJS();
  } catch (err) {
    // e.g. yaml's guard against an alias bomb ("Excessive alias count ..."): the file's fault, not ours.
    throw new ConfigError(file, undefined, `cannot be read as a profile (${(err as Error).message.split('\n')[0]})`, 'write the profile without YAML aliases; see configs/devices/h100-sxm.yaml');
  }
  return validateProfile(value, file);
}

/** The largest bandwidth (GB/s), memory (GiB) or peak (TFLOPS) a profile may state. */
const PROFILE_NUMBER_MAX = 1e6;

function validateProfile(raw: unknown, file: string): DeviceProfile {
  const fail = (field: string, value: unknown, problem: string, fix: string): never => {
    throw new ConfigError(file, field, value === undefined ? problem : `${problem} (got ${showValue(value)})`, fix);  // a missing field has no value to show
  };
  if (!isPlainObject(raw)) {
    throw new ConfigError(file, undefined, `the top level must be a mapping (got ${showValue(raw)})`, `write the keys ${KEYS.join(', ')}`);
  }
  // Unknown keys are refused: a misspelt key would otherwise only show up as "missing".
  for (const key of Object.keys(raw)) {
    if (!(KEYS as readonly string[]).includes(key)) fail(key, raw[key], 'unknown key', `remove it; the keys are ${KEYS.join(', ')}`);
  }
  const text = (field: string, example: string, pattern?: RegExp, what = 'a non-empty string'): string => {
    const value = raw[field];
    if (value === undefined || value === null) fail(field, value, 'required field is missing', `add ${field}: ${example}`);
    if (typeof value !== 'string' || value.trim().length === 0 || (pattern !== undefined && !pattern.test(value))) {
      fail(field, value, `must be ${what}`, `write ${field}: ${example}`);
    }
    return value as string;
  };
  const positive = (obj: Record<string, unknown>, key: string, field: string, example: string): number => {
    const value = obj[key];
    if (value === undefined || value === null) fail(field, value, 'required field is missing', `add ${field} as a positive number such as ${example}`);
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
      fail(field, value, 'must be a finite number greater than 0', `write a plain number such as ${example}`);
    }
    // A million GB/s, GiB or TFLOPS is ~300x any device there is; beyond it the plan's ceilings print as Infinity.
    if ((value as number) > PROFILE_NUMBER_MAX) fail(field, value, `must be at most ${PROFILE_NUMBER_MAX}`, `write the device's figure, such as ${example}`);
    return value as number;
  };

  const id = text('id', stem(file), ID_PATTERN, 'lower-case letters, digits and dashes');
  if (id !== stem(file)) fail('id', id, `must equal the file name's stem "${stem(file)}"`, `set id: ${stem(file)} or rename the file to ${id}.yaml`);
  const name = text('name', 'NVIDIA H100 SXM5 80GB');
  const target = raw.target;
  if (!TARGETS.includes(target as DeviceTarget)) fail('target', target, 'must be cuda or cpu', 'write target: cuda or target: cpu');
  const arch = target === 'cuda'
    ? text('arch', 'sm_90a', CUDA_ARCH_PATTERN, 'a CUDA arch (sm_ and digits)')
    : text('arch', 'x86-64-v4', CPU_ARCH_PATTERN, 'a -march value');
  const memory_gib = positive(raw, 'memory_gib', 'memory_gib', '80');
  const memory_bandwidth_gbs = positive(raw, 'memory_bandwidth_gbs', 'memory_bandwidth_gbs', '3350');

  const peaks = raw.peak_matrix_tflops;
  if (peaks === undefined || peaks === null) {
    fail('peak_matrix_tflops', peaks, 'required field is missing', 'add peak_matrix_tflops: { bf16: 989, f16: 989, f32: 67 }');
  }
  if (!isPlainObject(peaks)) fail('peak_matrix_tflops', peaks, 'must be a mapping', 'write peak_matrix_tflops: { bf16: 989, f16: 989, f32: 67 }');
  const p = peaks as Record<string, unknown>;
  for (const key of Object.keys(p)) {
    if (!(PEAK_KEYS as readonly string[]).includes(key)) {
      fail(`peak_matrix_tflops.${key}`, p[key], 'unknown key', `remove it; the keys are ${PEAK_KEYS.join(', ')}`);
    }
  }
  const peak_matrix_tflops: PeakMatrixTflops = {
    bf16: positive(p, 'bf16', 'peak_matrix_tflops.bf16', '989'),
    f16: positive(p, 'f16', 'peak_matrix_tflops.f16', '989'),
    f32: positive(p, 'f32', 'peak_matrix_tflops.f32', '67'),
  };
  const source = text('source', '"datasheet …"');
  return { id, name, target: target as DeviceTarget, arch, memory_gib, memory_bandwidth_gbs, peak_matrix_tflops, source };
}

function profileFiles(dir: string): string[] {
  if (!existsSync(dir)) throw new ConfigError(dir, undefined, 'device profile directory not found', 'reinstall the package or pass a path to a .yaml profile');
  return readdirSync(dir)
    .filter((f) => /\.ya?ml$/i.test(f))
    .sort()
    .map((f) => join(dir, f));
}

function stem(file: string): string {
  return basename(file, extname(file));
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
