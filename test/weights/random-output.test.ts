import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ModelConfig } from '../../compiler/config/model.js';
import { normalizeParams } from '../../compiler/config/normalize.js';
import { WeightsError } from '../../compiler/weights/errors.js';
import { lockOutDir, OUT_LOCK_NAME } from '../../compiler/weights/out-lock.js';
import { RANDOM_WEIGHTS_MARK, writeRandomWeights } from '../../compiler/weights/random.js';
import { readSafetensorsHeader, SafetensorsWriter } from '../../compiler/weights/safetensors.js';

/** Where random-weights writes, what it refuses to overwrite, and what a failure leaves behind. */

const BASE = { dim: 64, n_layers: 2, n_heads: 4, n_kv_heads: 2, head_dim: 16, hidden_dim: 128, vocab_size: 512, norm_eps: 1e-5, rope_theta: 1e6, max_seq_len: 256 };
const dense = (): ModelConfig => normalizeParams(BASE, '<inline>', { name: 'tiny-dense' });
const moe = (): ModelConfig => normalizeParams({ ...BASE, moe: { num_experts: 4, num_experts_per_tok: 2 } }, '<inline>', { name: 'tiny-moe' });
// Root ignores permission bits, so chmod-based cases only show anything for other users.
const isRoot = process.getuid?.() === 0;

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'mc-random-out-'));
});
afterAll(async () => {
  await chmod(join(root, 'read-only'), 0o755).catch(() => undefined);
  await rm(root, { recursive: true, force: true });
});

async function sha256(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex');
}

/** The error a call fails with (the test fails if it succeeds). */
async function failure(run: Promise<unknown>): Promise<Error> {
  try {
    await run;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a failure');
}

function expectOneLine(err: Error, pattern: RegExp): void {
  expect(err).toBeInstanceOf(WeightsError);
  expect(err.message).not.toContain('\n');
  expect(err.message).toMatch(pattern);
}

/** A checkpoint as another tool writes it: valid safetensors, __metadata__ {format: 'pt'} and no mark. */
async function writeForeignCheckpoint(path: string): Promise<void> {
  const writer = await SafetensorsWriter.create(path, [{ name: 'tok_embeddings.weight', dtype: 'F32', shape: [2, 2] }], { metadata: { format: 'pt' } });
  await writer.write('tok_embeddings.weight', Float32Array.from([1, 2, 3, 4]));
  await writer.close();
}

/** Rewrites a checkpoint's header without the mark, as random-weights wrote it before the mark existed. */
async function removeMark(path: string): Promise<void> {
  const bytes = await readFile(path);
  const length = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + length).toString('utf8')) as Record<string, unknown>;
  expect(header.__metadata__).toEqual({ format: 'pt', ...RANDOM_WEIGHTS_MARK });
  const { __metadata__: _meta, ...tensors } = header;
  let json = `{"__metadata__":{"format":"pt"},${JSON.stringify(tensors).slice(1)}`; // data_offsets are relative: data is kept as is
  json = json.padEnd(Math.ceil(json.length / 8) * 8, ' ');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  await writeFile(path, Buffer.concat([prefix, Buffer.from(json, 'utf8'), bytes.subarray(8 + length)]));
}

describe('random-weights output directory', () => {
  it('refuses an --out that is an existing file, in one line naming it', async () => {
    const file = join(root, 'a-file');
    await writeFile(file, 'not a directory\n');
    const err = await failure(writeRandomWeights(dense(), file, { seed: 1, dtype: 'f32' }));
    expectOneLine(err, new RegExp(`^${file}: is a file, not a directory; pass a directory to --out`));
    expect(await readFile(file, 'utf8')).toBe('not a directory\n');
  });

  it('refuses an --out below an existing file, in one line naming it', async () => {
    const file = join(root, 'another-file');
    await writeFile(file, '');
    const out = join(file, 'sub', 'dir');
    const err = await failure(writeRandomWeights(dense(), out, { seed: 1, dtype: 'f32' }));
    expectOneLine(err, new RegExp(`^${out}: cannot be created as the output directory \\(ENOTDIR: a parent in the path is a file, not a directory\\); pass another --out`));
  });

  it.skipIf(isRoot)('refuses an --out in a read-only directory, in one line naming it', async () => {
    const readOnly = join(root, 'read-only');
    await mkdir(readOnly);
    await chmod(readOnly, 0o555);
    const below = await failure(writeRandomWeights(dense(), join(readOnly, 'model'), { seed: 1, dtype: 'f32' }));
    expectOneLine(below, /read-only\/model: cannot be created as the output directory \(EACCES: permission denied\); pass another --out/);
    const inside = await failure(writeRandomWeights(dense(), readOnly, { seed: 1, dtype: 'f32' }));
    expectOneLine(inside, /read-only\/consolidated\.safetensors: cannot be written: a temporary file beside it cannot be created \(EACCES: permission denied\); pass another --out/);
  });

  it('marks its checkpoint in __metadata__, which the reader accepts', async () => {
    const { safetensorsPath } = await writeRandomWeights(dense(), join(root, 'marked'), { seed: 1, dtype: 'bf16' });
    expect((await readSafetensorsHeader(safetensorsPath)).metadata).toEqual({ format: 'pt', written_by: 'mistral-compile random-weights' });
  });

  it('regenerates into the same --out: the same seed gives the same bytes, another seed replaces them', async () => {
    const out = join(root, 'regenerate');
    const first = await writeRandomWeights(moe(), out, { seed: 0, dtype: 'bf16' });
    const before = await sha256(first.safetensorsPath);
    await writeRandomWeights(moe(), out, { seed: 0, dtype: 'bf16' });
    expect(await sha256(first.safetensorsPath)).toBe(before);
    await writeRandomWeights(dense(), out, { seed: 5, dtype: 'f32' });
    expect(await sha256(first.safetensorsPath)).not.toBe(before);
    expect(JSON.parse(await readFile(first.paramsPath, 'utf8'))).not.toHaveProperty('moe');
    expect((await readdir(out)).sort()).toEqual(['consolidated.safetensors', 'params.json']);
  });

  it('refuses to overwrite a checkpoint it did not write, and leaves the directory untouched', async () => {
    const out = join(root, 'real-model');
    await mkdir(out);
    const weights = join(out, 'consolidated.safetensors');
    await writeForeignCheckpoint(weights);
    await writeFile(join(out, 'params.json'), '{"dim": 4}\n');
    const before = await sha256(weights);
    const err = await failure(writeRandomWeights(dense(), out, { seed: 1, dtype: 'bf16' }));
    expectOneLine(err, new RegExp(`^${weights}: exists and was not written by mistral-compile random-weights .*; pass another --out, or delete the file yourself`));
    expect(await sha256(weights)).toBe(before);
    expect(await readFile(join(out, 'params.json'), 'utf8')).toBe('{"dim": 4}\n');
    expect((await readdir(out)).sort()).toEqual(['consolidated.safetensors', 'params.json']);
  });

  it('refuses to overwrite a consolidated.safetensors that is not a safetensors file', async () => {
    const out = join(root, 'not-safetensors');
    await mkdir(out);
    await writeFile(join(out, 'consolidated.safetensors'), 'precious\n');
    const err = await failure(writeRandomWeights(dense(), out, { seed: 1, dtype: 'bf16' }));
    expectOneLine(err, /consolidated\.safetensors: exists and is not a safetensors file that this command can read, so it may be a real model's weights; pass another --out/);
    expect(await readFile(join(out, 'consolidated.safetensors'), 'utf8')).toBe('precious\n');
    expect(await readdir(out)).toEqual(['consolidated.safetensors']);
  });

  it('replaces an unmarked checkpoint from an older version only when it holds this seed\'s values', async () => {
    const out = join(root, 'unmarked');
    const { safetensorsPath } = await writeRandomWeights(dense(), out, { seed: 3, dtype: 'bf16' });
    await removeMark(safetensorsPath);
    expect((await readSafetensorsHeader(safetensorsPath)).metadata).toEqual({ format: 'pt' });
    const unmarked = await sha256(safetensorsPath);
    const err = await failure(writeRandomWeights(dense(), out, { seed: 4, dtype: 'bf16' }));
    expectOneLine(err, /was not written by mistral-compile random-weights .*recognised only when rewritten with the same --seed/);
    expect(await sha256(safetensorsPath)).toBe(unmarked);
    await writeRandomWeights(dense(), out, { seed: 3, dtype: 'f32' }); // same seed: recognised, whatever the new dtype
    expect((await readSafetensorsHeader(safetensorsPath)).metadata).toEqual({ format: 'pt', ...RANDOM_WEIGHTS_MARK });
  });

  it('leaves no params.json behind when the first write fails part-way', async () => {
    const out = join(root, 'first-fails');
    const err = await failure(writeRandomWeights(moe(), out, {
      seed: 1, dtype: 'f32', onProgress: () => {
        throw new Error('interrupted');
      },
    }));
    expect(err.message).toBe('interrupted');
    expect(await readdir(out)).toEqual([]); // neither params.json nor a temporary file
  });

  it('keeps the previous params.json and checkpoint, unchanged, when a rewrite fails part-way', async () => {
    const out = join(root, 'rewrite-fails');
    const old = await writeRandomWeights(dense(), out, { seed: 1, dtype: 'bf16' });
    const [weights, params] = [await sha256(old.safetensorsPath), await readFile(old.paramsPath, 'utf8')];
    let calls = 0;
    await failure(writeRandomWeights(moe(), out, {
      seed: 2, dtype: 'f32', onProgress: () => {
        if (++calls === 3) throw new Error('interrupted');
      },
    }));
    expect(await sha256(old.safetensorsPath)).toBe(weights);
    expect(await readFile(old.paramsPath, 'utf8')).toBe(params);
    expect((await readdir(out)).sort()).toEqual(['consolidated.safetensors', 'params.json']);
  });

  it('reports a params.json it cannot replace in one line, before touching the checkpoint', async () => {
    const out = join(root, 'params-is-a-directory');
    const old = await writeRandomWeights(dense(), out, { seed: 1, dtype: 'bf16' });
    const weights = await sha256(old.safetensorsPath);
    await rm(old.paramsPath);
    await mkdir(old.paramsPath); // unlink() refuses a directory, for root too
    const err = await failure(writeRandomWeights(dense(), out, { seed: 2, dtype: 'bf16' }));
    expectOneLine(err, new RegExp(`^${old.paramsPath}: cannot be removed before it is rewritten \\(EISDIR: it is a directory\\); remove or rename`));
    expect(await sha256(old.safetensorsPath)).toBe(weights);
    expect((await readdir(out)).sort()).toEqual(['consolidated.safetensors', 'params.json']);
  });
});

describe('two runs into one --out (a lock in the directory)', () => {
  const lockOf = (dir: string) => join(dir, OUT_LOCK_NAME);

  it('at the same time: one writes its pair, the other refuses in one line and leaves no file', async () => {
    const out = join(root, 'concurrent');
    const runs = await Promise.allSettled([
      writeRandomWeights(dense(), out, { seed: 1, dtype: 'bf16' }),
      writeRandomWeights(moe(), out, { seed: 2, dtype: 'f32' }),
    ]);
    const refused = runs.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(refused).toHaveLength(1);
    expectOneLine(refused[0]!.reason as Error, new RegExp(`^${out}: is being written by another run \\(${process.pid}@[^)]+\\): its lock \\.random-weights\\.lock is held; wait for it to finish, or pass another --out; if no run is writing here, delete ${join(out, OUT_LOCK_NAME)}$`));
    expect((await readdir(out)).sort()).toEqual(['consolidated.safetensors', 'params.json']);
    // The pair is the winner's: its params.json describes the weights beside it.
    const params = JSON.parse(await readFile(join(out, 'params.json'), 'utf8')) as { moe?: unknown };
    const header = await readSafetensorsHeader(join(out, 'consolidated.safetensors'));
    expect(header.tensors.has('layers.0.feed_forward.gate.weight')).toBe(params.moe !== undefined);
  });

  /** A lock as a run writes it: pid@host, the boot, the process's start time (field 22 of /proc/PID/stat), a token. */
  const lockLine = (pid: number, o: { start?: string; boot?: string; host?: string } = {}) => {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const start = o.start ?? stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
    const boot = o.boot ?? readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    return `${pid}@${o.host ?? hostname()} boot=${boot} start=${start} token=0123456789abcdef\n`;
  };
  const refusedBy = async (out: string, lock: string) => {
    await mkdir(out, { recursive: true });
    await writeFile(lockOf(out), lock);
    return failure(writeRandomWeights(dense(), out, { seed: 1, dtype: 'bf16' }));
  };
  const takenOver = async (out: string, lock: string) => {
    await mkdir(out, { recursive: true });
    await writeFile(lockOf(out), lock);
    await writeRandomWeights(dense(), out, { seed: 1, dtype: 'bf16' });
    expect((await readdir(out)).sort()).toEqual(['consolidated.safetensors', 'params.json']);
  };

  it('held by a live process: refused, nothing written, the lock named for deletion; once that process is gone, taken over', async () => {
    const out = join(root, 'held');
    const holder = spawn('sleep', ['60'], { stdio: 'ignore' });
    try {
      const err = await refusedBy(out, lockLine(holder.pid!));
      expectOneLine(err, new RegExp(`is being written by another run \\(${holder.pid}@[^)]+\\): its lock \\.random-weights\\.lock is held; wait for it to finish, or pass another --out; if no run is writing here, delete ${lockOf(out)}$`));
      expect(await readdir(out)).toEqual([OUT_LOCK_NAME]);
    } finally {
      holder.kill('SIGKILL');
      await once(holder, 'exit');
    }
    await writeRandomWeights(dense(), out, { seed: 1, dtype: 'bf16' });  // the holder is gone: as after a SIGKILL
    expect((await readdir(out)).sort()).toEqual(['consolidated.safetensors', 'params.json']);
  });

  it('left by a run whose pid now belongs to another process (another start time, another boot, or this very process): taken over', async () => {
    await takenOver(join(root, 'reused-pid'), lockLine(process.ppid, { start: '1' }));
    await takenOver(join(root, 'other-boot'), lockLine(process.ppid, { boot: '00000000-0000-0000-0000-000000000000' }));
    await takenOver(join(root, 'own-pid'), lockLine(process.pid));  // e.g. PID 1 of a restarted container
  });

  it('a lock in another form: waited for while fresh (one being written where links are refused), taken over when old', async () => {
    const out = join(root, 'other-form');
    const err = await refusedBy(out, '');  // created, not yet written
    expectOneLine(err, /is being written by another run: its lock \.random-weights\.lock is held/);
    await utimes(lockOf(out), new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
    await writeRandomWeights(dense(), out, { seed: 1, dtype: 'bf16' });
    expect((await readdir(out)).sort()).toEqual(['consolidated.safetensors', 'params.json']);
  });

  it('held from another host (a shared file system): refused, naming the lock to delete if nobody writes there', async () => {
    const out = join(root, 'other-host');
    const err = await refusedBy(out, lockLine(process.pid, { host: 'some-other-host.example' }));
    expectOneLine(err, new RegExp(`\\(${process.pid}@some-other-host\\.example\\): its lock .*; wait for it to finish, or pass another --out; if no run on that host is writing here, delete ${lockOf(out)}$`));
    expect(await readdir(out)).toEqual([OUT_LOCK_NAME]);
  });

  it('a dead lock found by several runs at once is taken over by one of them; the others refuse', async () => {
    for (let trial = 0; trial < 20; trial++) {
      const out = join(root, `dead-race-${trial}`);
      await mkdir(out, { recursive: true });
      await writeFile(lockOf(out), lockLine(process.ppid, { start: '1' }));  // a killed run's
      const runs = await Promise.allSettled([0, 1, 2, 3].map(() => lockOutDir(out)));
      const held = runs.filter((r): r is PromiseFulfilledResult<Awaited<ReturnType<typeof lockOutDir>>> => r.status === 'fulfilled');
      expect(held, `trial ${trial}`).toHaveLength(1);
      for (const r of runs) {
        if (r.status === 'rejected') expectOneLine(r.reason as Error, /is being written by another run \(\d+@[^)]+\): its lock \.random-weights\.lock is held/);
      }
      expect(await readFile(lockOf(out), 'utf8')).toContain(`${process.pid}@`);
      await held[0]!.value.release();
      expect(await readdir(out)).toEqual([]);
    }
  });

  it('a lock that is not a file (a directory of that name) is one line naming it, and nothing is written', async () => {
    const out = join(root, 'lock-is-dir');
    await mkdir(lockOf(out), { recursive: true });
    const err = await failure(writeRandomWeights(dense(), out, { seed: 1, dtype: 'bf16' }));
    expectOneLine(err, new RegExp(`^${lockOf(out)}: cannot be read to see who holds the output directory \\(EISDIR[^)]*\\); delete ${lockOf(out)} if no run is writing there$`));
    expect(await readdir(out)).toEqual([OUT_LOCK_NAME]);
  });

  it('a run removes its lock only while it is its own', async () => {
    const out = join(root, 'release');
    await mkdir(out, { recursive: true });
    const lock = await lockOutDir(out);
    await writeFile(lock.path, lockLine(process.ppid));  // another run's now (one that wrongly took it over)
    await lock.release();
    expect(await readdir(out)).toEqual([OUT_LOCK_NAME]);
    await rm(lock.path);
    const again = await lockOutDir(out);
    await again.release();
    expect(await readdir(out)).toEqual([]);
  });

  it('a checkpoint larger than the disk\'s free space is refused before anything is written', async () => {
    const out = join(root, 'too-large');
    // 1024 layers of dim 65536 and hidden 2^20: ~400 TiB in bf16, more than any disk these tests run on.
    const huge = normalizeParams({ ...BASE, dim: 65536, n_layers: 1024, n_heads: 64, n_kv_heads: 8, head_dim: 1024, hidden_dim: 1 << 20 }, '<inline>', { name: 'huge' });
    const err = await failure(writeRandomWeights(huge, out, { seed: 1, dtype: 'bf16' }));
    expectOneLine(err, new RegExp(`^${out}: has [\\d.]+ \\w+ free, and the checkpoint takes [\\d.]+ TiB; free some space, or pass another --out`));
    expect(await readdir(out)).toEqual([]);
  });

  it('no lock is left after a run that succeeded or failed', async () => {
    const out = join(root, 'lock-released');
    await writeRandomWeights(dense(), out, { seed: 1, dtype: 'bf16' });
    await failure(writeRandomWeights(dense(), out, { seed: 1, dtype: 'bf16', onProgress: () => { throw new Error('interrupted'); } }));
    expect((await readdir(out)).sort()).toEqual(['consolidated.safetensors', 'params.json']);
  });
});

describe('a directory that holds a real model in another form', () => {
  it('with the shards of a checkpoint: refused, nothing written (a random consolidated.safetensors would be read instead of them)', async () => {
    const dir = join(root, 'sharded-real');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'params.json'), '{"real": true}');
    await writeFile(join(dir, 'consolidated-00001-of-00002.safetensors'), 'shard');
    const err = await failure(writeRandomWeights(dense(), dir, { seed: 0, dtype: 'f32' }));
    expect(err).toBeInstanceOf(WeightsError);
    expect(err.message).toMatch(/consolidated-00001-of-00002\.safetensors: is a shard of a checkpoint in this directory, so it may be a real model's weights; pass another --out/);
    expect((await readdir(dir)).sort()).toEqual(['consolidated-00001-of-00002.safetensors', 'params.json']);
    expect(await readFile(join(dir, 'params.json'), 'utf8')).toBe('{"real": true}');
  });

  it('with a params.json and no consolidated.safetensors (weights kept elsewhere, or as .pth): refused', async () => {
    const dir = join(root, 'params-alone');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'params.json'), '{"real": true}');
    const err = await failure(writeRandomWeights(dense(), dir, { seed: 0, dtype: 'f32' }));
    expect(err.message).toMatch(/params\.json: exists without a consolidated\.safetensors written by random-weights beside it, so it may be a real model's weights/);
    expect(await readFile(join(dir, 'params.json'), 'utf8')).toBe('{"real": true}');
  });
});

