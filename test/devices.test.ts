import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { listDeviceProfiles, loadDeviceProfile, shippedDevicesDir } from '../compiler/config/devices.js';
import { ConfigError } from '../compiler/errors.js';

describe('shipped device profiles', () => {
  it('all load, with their file stem as id', () => {
    expect(listDeviceProfiles().map((p) => p.id)).toEqual(['a100-sxm', 'cpu-epyc-2core', 'h100-sxm', 'h200']);
  });

  it.each([
    ['h100-sxm', 3350, 989],
    ['h200', 4800, 989],
    ['a100-sxm', 2039, 312],
  ])('%s carries its datasheet bandwidth and dense bf16 peak', (id, bandwidth, bf16) => {
    const p = loadDeviceProfile(id);
    expect(p.target).toBe('cuda');
    expect(p.memory_bandwidth_gbs).toBe(bandwidth);
    expect(p.peak_matrix_tflops.bf16).toBe(bf16);
  });

  it('describes this machine as a CPU with the measured 49 GB/s', () => {
    const p = loadDeviceProfile('cpu-epyc-2core');
    expect(p).toMatchObject({ target: 'cpu', arch: 'x86-64-v4', memory_bandwidth_gbs: 49 });
  });
});

describe('looking a profile up', () => {
  it.each([
    ['h100', 'h100-sxm'],
    ['H100', 'h100-sxm'],
    ['h200', 'h200'],
    ['a100', 'a100-sxm'],
    ['cpu', 'cpu-epyc-2core'],
    ['cpu-epyc', 'cpu-epyc-2core'],
  ])('finds %s as %s', (query, id) => {
    expect(loadDeviceProfile(query).id).toBe(id);
  });

  it('accepts a path to a profile file', () => {
    expect(loadDeviceProfile(join(shippedDevicesDir(), 'h200.yaml')).id).toBe('h200');
  });

  it('refuses a partial word and lists the profiles there are', () => {
    expect(() => loadDeviceProfile('h1')).toThrow(/no device profile "h1".*a100-sxm, cpu-epyc-2core, h100-sxm, h200/);
  });
});

describe('a bad profile', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mc-devices-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const good = readFileSync(join(shippedDevicesDir(), 'h100-sxm.yaml'), 'utf8');

  /** Writes `text` as <dir>/<n>/h100-sxm.yaml (the id must match the stem) and loads it. */
  let n = 0;
  const loadText = (text: string, file = 'h100-sxm.yaml') => {
    const sub = join(dir, String(n++));
    mkdirSync(sub);
    const path = join(sub, file);
    writeFileSync(path, text);
    return { path, load: () => loadDeviceProfile(path) };
  };
  const expectOneLineError = (text: string, field: RegExp, file?: string) => {
    const { path, load } = loadText(text, file);
    let error: unknown;
    try {
      load();
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const message = (error as ConfigError).message;
    expect(message).not.toContain('\n');
    expect(message).toContain(path);
    expect((error as ConfigError).field ?? '').toMatch(field);
    return message;
  };

  it('refuses a YAML alias bomb in one line (not an internal error)', () => {
    const levels = ['a: &a ["x","x","x","x","x","x","x","x","x"]'];
    for (let i = 1; i < 9; i++) levels.push(`${'abcdefghi'[i]}: &${'abcdefghi'[i]} [${Array(9).fill(`*${'abcdefghi'[i - 1]}`).join(',')}]`);
    const { path, load } = loadText(`${good}\n${levels.join('\n')}\n`);
    expect(load).toThrow(ConfigError);
    expect(load).toThrow(new RegExp(`^${path}: cannot be read as a profile \\(.*alias.*\\); write the profile without YAML aliases`, 'i'));
  });

  it('names the missing field', () => {
    const message = expectOneLineError(good.replace(/^memory_bandwidth_gbs:.*$/m, ''), /^memory_bandwidth_gbs$/);
    expect(message).toMatch(/required field is missing/);
  });

  it('refuses a negative bandwidth', () => {
    const message = expectOneLineError(good.replace(/^memory_bandwidth_gbs:.*$/m, 'memory_bandwidth_gbs: -3350'), /^memory_bandwidth_gbs$/);
    expect(message).toMatch(/greater than 0 \(got -3350\)/);
  });

  it('refuses a figure beyond any device (it printed Infinity tokens/s)', () => {
    const message = expectOneLineError(good.replace(/^memory_bandwidth_gbs:.*$/m, 'memory_bandwidth_gbs: 1e308'), /^memory_bandwidth_gbs$/);
    expect(message).toMatch(/must be at most 1000000 \(got 1e\+308\)/);
  });

  it('refuses a number written as a string', () => {
    expectOneLineError(good.replace(/^memory_gib:.*$/m, 'memory_gib: "80"'), /^memory_gib$/);
  });

  it('refuses a peak that is not finite', () => {
    expectOneLineError(good.replace(/bf16: 989/, 'bf16: .inf'), /^peak_matrix_tflops\.bf16$/);
  });

  it('refuses a missing peak inside peak_matrix_tflops', () => {
    expectOneLineError(good.replace(/f16: 989, /, ''), /^peak_matrix_tflops\.f16$/);
  });

  it('refuses an unknown target', () => {
    expectOneLineError(good.replace(/^target:.*$/m, 'target: rocm'), /^target$/);
  });

  it('refuses a CUDA arch that is not sm_XX', () => {
    expectOneLineError(good.replace(/^arch:.*$/m, 'arch: "sm_90a; rm -rf /"'), /^arch$/);
  });

  it('refuses a misspelt key rather than reporting it missing', () => {
    expectOneLineError(good.replace(/^memory_gib:/m, 'memory_gb:'), /^memory_gb$/);
  });

  it('refuses an id that differs from the file name', () => {
    expectOneLineError(good, /^id$/, 'other.yaml');
  });

  it('reports a YAML syntax error on one line', () => {
    expectOneLineError(good.replace(/^source:.*$/m, 'source: "unterminated'), /^$/);
  });
});
