/**
 * Sharded checkpoints (consolidated-00001-of-0000N.safetensors ..., as Mistral publishes its larger
 * models): each shard is mapped and every weight points into the shard that holds it. The logits
 * must be the single file's, bit for bit, at TP 1 and 2, mapped or copied; a shard missing, twice,
 * from another checkpoint, or a tensor in two shards, is one line naming the file.
 */
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WeightsError } from '../../compiler/weights/errors.js';
import { readSafetensorsHeader, SafetensorsWriter } from '../../compiler/weights/safetensors.js';
import { shardName } from '../../compiler/weights/shards.js';
import { readCheckpoint } from '../../runtime/checkpoint-files.js';
import { loadModel } from '../../runtime/model.js';
import { createWorkspace, DENSE_GQA, tokensFor, writeModelDir, type ModelDir, type Workspace } from './helpers.js';

/**
 * Splits dir's consolidated.safetensors into `groups.length` shards (shard i holds the tensors at the
 * indices groups[i], in data order: not necessarily neighbours), copying each tensor's bytes.
 */
async function shard(from: string, to: string, groups: number[][]): Promise<void> {
  const header = await readSafetensorsHeader(join(from, 'consolidated.safetensors'));
  const tensors = [...header.tensors.values()];
  mkdirSync(to, { recursive: true });
  copyFileSync(join(from, 'params.json'), join(to, 'params.json'));
  const source = await open(header.path, 'r');
  try {
    for (const [i, indices] of groups.entries()) {
      const mine = indices.map((k) => tensors[k]!);
      const writer = await SafetensorsWriter.create(join(to, shardName(i + 1, groups.length)), mine.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape })));
      for (const t of mine) {
        const bytes = Buffer.alloc(t.end - t.begin);
        await source.read(bytes, 0, bytes.length, t.offset);
        await writer.write(t.name, bytes);
      }
      await writer.close();
    }
  } finally {
    await source.close();
  }
}

let ws: Workspace;
let single: ModelDir;
let count: number;
beforeAll(async () => {
  ws = await createWorkspace('sharded');
  single = await writeModelDir(ws.root, 'single', { params: { ...DENSE_GQA, moe: { num_experts: 4, num_experts_per_tok: 2 } } }, { seed: 920, dtype: 'bf16' });
  count = (await readSafetensorsHeader(single.safetensorsPath)).tensors.size;
});
afterAll(async () => ws?.remove());

/** Three shards, the tensors dealt round-robin (so that every layer's weights span all three files). */
const roundRobin = () => [0, 1, 2].map((s) => Array.from({ length: count }, (_, k) => k).filter((k) => k % 3 === s));

describe('a sharded checkpoint', () => {
  it('gives the single file\'s logits bit for bit, at TP 1 and 2, mapped and copied', async () => {
    const dir = join(ws.root, 'three');
    await shard(single.dir, dir, roundRobin());
    const tokens = tokensFor(single, 9, 921);
    // The single file at the same TP size (TP 2 sums its all-reduce in another order than TP 1).
    const expectedAt = async (tp: 1 | 2) => {
      const reference = await loadModel(single.dir, { cacheDir: ws.cacheDir, maxTokens: 4, tp });
      try {
        return await reference.logits(tokens);
      } finally {
        reference.close();
      }
    };
    const expected = { 1: await expectedAt(1), 2: await expectedAt(2) };
    const checkpoint = await readCheckpoint(dir);
    expect(checkpoint.files.map((f) => f.path)).toEqual([1, 2, 3].map((i) => join(dir, shardName(i, 3))));
    expect(checkpoint.display).toBe(join(dir, 'consolidated-{00001..00003}-of-00003.safetensors'));
    for (const [tp, weights] of [[1, 'map'], [2, 'map'], [1, 'copy']] as const) {
      const events: string[] = [];
      const model = await loadModel(dir, { cacheDir: ws.cacheDir, maxTokens: 4, tp, weights, onProgress: (e) => { if (e.stage === 'weights') events.push(e.path); } });
      try {
        const rows = await model.logits(tokens);
        expect(rows).toHaveLength(tokens.length);
        rows.forEach((row, i) => {
          const want = expected[tp][i]!;
          expect(Buffer.from(row.buffer, row.byteOffset, row.byteLength).equals(Buffer.from(want.buffer, want.byteOffset, want.byteLength)), `tp ${tp} ${weights} row ${i}`).toBe(true);
        });
      } finally {
        model.close();
      }
      expect(events).toEqual([checkpoint.display]);
    }
  });

  it('a shard changed under the loaded model fails the next call, naming that shard', async () => {
    const dir = join(ws.root, 'changed');
    await shard(single.dir, dir, roundRobin());
    const model = await loadModel(dir, { cacheDir: ws.cacheDir, maxTokens: 4 });
    try {
      await model.logits([1, 2]);
      const second = join(dir, shardName(2, 3));
      writeFileSync(second, readFileSync(second));  // rewritten in place: same bytes, new mtime
      const err = await model.logits([1, 2]).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(WeightsError);
      expect((err as Error).message).toMatch(new RegExp(`^${second.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: has been modified since it was mapped`));
    } finally {
      model.close();
    }
  });

  it('consolidated.safetensors beside shards is read alone (it is complete by itself)', async () => {
    const dir = join(ws.root, 'both');
    await shard(single.dir, dir, roundRobin());
    copyFileSync(single.safetensorsPath, join(dir, 'consolidated.safetensors'));
    const checkpoint = await readCheckpoint(dir);
    expect(checkpoint.files.map((f) => f.path)).toEqual([join(dir, 'consolidated.safetensors')]);
  });
});

describe('a sharded checkpoint that is not whole is refused, naming the file', () => {
  const refused = async (dir: string) => {
    const err = await loadModel(dir, { cacheDir: ws.cacheDir }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WeightsError);
    return (err as Error).message;
  };

  it('a missing shard', async () => {
    const dir = join(ws.root, 'missing');
    await shard(single.dir, dir, roundRobin());
    rmSync(join(dir, shardName(2, 3)));
    expect(await refused(dir)).toBe(`${join(dir, shardName(2, 3))}: is missing: the checkpoint is sharded in 3 files and this one is not in ${dir}; download every shard of the checkpoint`);
  });

  it('shards of two checkpoints', async () => {
    const dir = join(ws.root, 'mixed');
    await shard(single.dir, dir, roundRobin());
    renameSync(join(dir, shardName(3, 3)), join(dir, shardName(3, 4)));
    expect(await refused(dir)).toMatch(/consolidated-00003-of-00004\.safetensors: says 4 shards where consolidated-0000\d-of-0000\d\.safetensors says \d: shards of two checkpoints are mixed; keep the shards of one download only$/);
  });

  it('a shard name claiming billions of shards (a list that long is never made)', async () => {
    const dir = join(ws.root, 'huge-count');
    await shard(single.dir, dir, roundRobin());
    for (const i of [1, 2, 3]) renameSync(join(dir, shardName(i, 3)), join(dir, `consolidated-0000${i}-of-99999999999.safetensors`));
    expect(await refused(dir)).toMatch(/consolidated-0000\d-of-99999999999\.safetensors: says the checkpoint has 99999999999 shards, more than 100000; rename or remove the file/);
  });

  it('a shard twice, under another name', async () => {
    const dir = join(ws.root, 'twice');
    await shard(single.dir, dir, roundRobin());
    copyFileSync(join(dir, shardName(1, 3)), join(dir, 'consolidated-1-of-3.safetensors'));
    expect(await refused(dir)).toMatch(/: is shard 1 again, under another name; keep one file per shard$/);
  });

  it('a tensor in two shards', async () => {
    const dir = join(ws.root, 'overlap');
    const [a, b] = [Array.from({ length: count }, (_, k) => k).filter((k) => k < count / 2), Array.from({ length: count }, (_, k) => k).filter((k) => k >= count / 2 - 1)];
    await shard(single.dir, dir, [a, b]);
    expect(await refused(dir)).toMatch(new RegExp(`${shardName(2, 2).replace(/\./g, '\\.')}: tensor ".*": is also in .*${shardName(1, 2).replace(/\./g, '\\.')}: a tensor must be in one shard; re-download the checkpoint$`));
  });

  it('a tensor in none of them', async () => {
    const dir = join(ws.root, 'lacking');
    await shard(single.dir, dir, [Array.from({ length: count - 1 }, (_, k) => k)]);
    expect(await refused(dir)).toMatch(/consolidated-00001-of-00001\.safetensors: tensor ".*": is missing; the checkpoint does not match/);
  });
});
