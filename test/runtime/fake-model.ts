// Fixtures for the addon tests: the fake model library (test/fixtures/native/fake_model.cpp), a
// safetensors file holding its two weights, and a JS reference of what it computes.
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { execa } from 'execa';

import { packageRoot } from '../../compiler/paths.js';
import type { NativeWeight } from '../../runtime/native.js';

export const VOCAB = 8;
export const DIM = 4;

/**
 * Compiles the fake model into `dir` under a new name each time: dlopen of a path already loaded
 * hands back the old code (FACTS.md), so a rebuilt variant must never reuse a name.
 */
export async function buildFakeModel(dir: string, defines: string[] = []): Promise<string> {
  const root = packageRoot();
  const out = join(dir, `fake_model-${randomUUID()}.so`);
  await execa('g++', [
    '-std=c++17', '-shared', '-fPIC', '-O1', '-fvisibility=hidden',
    `-I${join(root, 'runtime', 'abi')}`,
    ...defines.map((d) => `-D${d}`),
    join(root, 'test', 'fixtures', 'native', 'fake_model.cpp'),
    '-o', out,
  ]);
  return out;
}

/** Values chosen as multiples of 1/4 and small integers: every result is exact in float32. */
export const embedding = Array.from({ length: VOCAB }, (_, t) => Array.from({ length: DIM }, (_, d) => t - d * 0.25));
export const output = Array.from({ length: VOCAB }, (_, v) => Array.from({ length: DIM }, (_, d) => ((v * 3 + d) % 5) - 2));

export interface FakeCheckpoint {
  path: string;
  weights: NativeWeight[];
  /** The 8-byte length plus the JSON header, as readHeader should return them. */
  headerBytes: Buffer;
}

/** A safetensors file by hand: u64 LE header length, JSON header (padded to 8), f32 data. */
export function writeFakeCheckpoint(dir: string): FakeCheckpoint {
  const tensorBytes = VOCAB * DIM * 4;
  const header = {
    'tok_embeddings.weight': { dtype: 'F32', shape: [VOCAB, DIM], data_offsets: [0, tensorBytes] },
    'output.weight': { dtype: 'F32', shape: [VOCAB, DIM], data_offsets: [tensorBytes, 2 * tensorBytes] },
  };
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  const headerBytes = Buffer.concat([length, Buffer.from(json, 'utf8')]);
  const data = new Float32Array([...embedding.flat(), ...output.flat()]);
  const path = join(dir, `fake-${randomUUID()}.safetensors`);
  writeFileSync(path, Buffer.concat([headerBytes, Buffer.from(data.buffer)]));
  const at = (offset: number): NativeWeight => ({
    offset: headerBytes.length + offset, rowStride: DIM, rows: VOCAB, cols: DIM, bytes: tensorBytes,
  });
  return { path, weights: [at(0), at(tensorBytes)], headerBytes };
}

/** The fake model in JS: logits of each of `tokens` run after `history` (positions 0..). */
export function referenceLogits(history: number[], tokens: number[]): number[][] {
  const all = [...history, ...tokens];
  return tokens.map((token, i) => {
    const p = history.length + i;
    const h = embedding[token].map((e, d) => {
      const past = all.slice(0, p).reduce((sum, t) => sum + embedding[t][d], 0);
      return e + 0.5 * past + 0.25 * p;
    });
    return output.map((row) => row.reduce((sum, w, d) => sum + w * h[d], 0));
  });
}
