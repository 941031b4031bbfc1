/**
 * One process per tensor-parallel rank (torchrun style): RANK, WORLD_SIZE, MASTER_ADDR and
 * MASTER_PORT in the environment, a TCP rendezvous at rank 0, the all-reduce and the logits gather
 * over loopback sockets. Checked against the same model with its ranks on threads in one process
 * (bit for bit) and against TP 1 (f32 rounding), and for the ways a group goes wrong.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import { normalizeParams } from '../../compiler/config/normalize.js';
import { writeRandomWeights } from '../../compiler/weights/random.js';
import { distributedFromEnv } from '../../runtime/distributed.js';
import { RuntimeError } from '../../runtime/errors.js';
import { loadModel } from '../../runtime/model.js';
import { relativeL2 } from '../reference/metrics.js';

const BASE = { dim: 64, n_layers: 2, head_dim: 16, hidden_dim: 128, n_heads: 8, n_kv_heads: 2, norm_eps: 1e-5, vocab_size: 512, rope_theta: 1e6, max_seq_len: 128 };
const RANK_SCRIPT = join(import.meta.dirname, 'dist-rank.ts');
const CLI_SCRIPT = join(import.meta.dirname, 'dist-cli.ts');
const tokens = Array.from({ length: 14 }, (_, i) => (i * 71 + 5) % 512);
/** Prefill 5 tokens (all logits), then decode the rest one by one: crosses the window of 6. */
const CALLS: Array<[number[], number, boolean]> = [[tokens.slice(0, 5), 0, true], ...tokens.slice(5).map((t, i): [number[], number, boolean] => [[t], 5 + i, false])];

let work: string;
let cacheDir: string;
let dense: string;
let moe: string;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'mc-dist-'));
  cacheDir = join(work, 'cache');
  dense = join(work, 'dense');
  moe = join(work, 'moe');
  await writeRandomWeights(normalizeParams({ ...BASE, sliding_window: 6 }, 'dense'), dense, { seed: 31, dtype: 'f32' });
  await writeRandomWeights(normalizeParams({ ...BASE, moe: { num_experts: 4, num_experts_per_tok: 2 } }, 'moe'), moe, { seed: 32, dtype: 'f32' });
});

function netnsAvailable(): boolean {
  const probe = `mc${process.pid}probe`;
  try {
    execFileSync('ip', ['netns', 'add', probe], { stdio: 'ignore' });
    execFileSync('ip', ['netns', 'del', probe], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

interface RankResult {
  rows: Float32Array[];
  error?: string;
  exitCode: number | undefined;
  seconds: number;
}

interface RankJob {
  dir?: string;
  calls?: Array<[number[], number, boolean]>;
  sequences?: number[][][];
  exitAfter?: number;
  modifyAfter?: number;
}

interface Launch {
  /** MASTER_ADDR (default the loopback address). */
  masterAddr?: string;
  /** Command words in front of node for a rank, e.g. ['ip', 'netns', 'exec', 'host1']. */
  prefix?: (rank: number) => string[];
}

/** Starts the given ranks of a world at once, each in a process of its own, and waits for all. */
async function runRanks(world: number, port: number, ranks: Array<[number, RankJob]>, timeoutS = 30, launch: Launch = {}): Promise<RankResult[]> {
  return Promise.all(ranks.map(async ([rank, job]) => {
    const started = performance.now();
    const [command, ...words] = [...(launch.prefix?.(rank) ?? []), process.execPath, '--import', 'tsx', RANK_SCRIPT, JSON.stringify({ dir: dense, cacheDir, calls: CALLS, ...job })];
    const child = await execa(command!, words, {
      env: { RANK: String(rank), WORLD_SIZE: String(world), MASTER_ADDR: launch.masterAddr ?? '127.0.0.1', MASTER_PORT: String(port), MC_DIST_TIMEOUT_S: String(timeoutS), OMP_NUM_THREADS: '1' },
      reject: false, timeout: 90_000,
    });
    const last = child.stdout.trim().split('\n').at(-1) ?? '';
    let parsed: { rows: string[]; error?: string };
    try {
      parsed = JSON.parse(last);
    } catch {
      throw new Error(`rank ${rank} printed no result (exit ${child.exitCode}): ${child.stdout}\n${child.stderr}`);
    }
    const rows = parsed.rows.map((b) => { const buf = Buffer.from(b, 'base64'); return new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4); });
    return { rows, error: parsed.error, exitCode: child.exitCode, seconds: (performance.now() - started) / 1000 };
  }));
}

/** The rows the calls give with every rank on a thread of this process (tp) or unsplit (tp 1). */
async function inProcess(dir: string, tp: 1 | 2 | 4): Promise<Float32Array[]> {
  const model = await loadModel(dir, { tp, cacheDir, maxTokens: 8 });
  const rows: Float32Array[] = [];
  for (const [t, pos, all] of CALLS) rows.push(...(await model.forward(t, pos, all)));
  model.close();
  return rows;
}

function sameBits(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

describe('tensor parallelism with one process per rank (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)', () => {
  for (const [name, world] of [['dense GQA, window 6, 2 KV heads', 2], ['dense GQA, window 6, KV heads replicated', 4], ['MoE top-2 of 4', 2]] as const) {
    it(`${name}, world ${world}: every rank returns the threads' bits, and TP 1 within 1e-5`, async () => {
      const dir = name.startsWith('MoE') ? moe : dense;
      const threads = await inProcess(dir, world);  // also builds the library the ranks take from the cache
      const single = await inProcess(dir, 1);
      const port = await freePort();
      const results = await runRanks(world, port, Array.from({ length: world }, (_, r) => [r, { dir }] as [number, RankJob]));
      for (const [r, result] of results.entries()) {
        expect(result.error, `rank ${r}`).toBeUndefined();
        expect(result.rows).toHaveLength(threads.length);
        result.rows.forEach((row, i) => {
          expect(sameBits(row, threads[i]!), `rank ${r}, row ${i}`).toBe(true);
          expect(relativeL2(row, single[i]!)).toBeLessThanOrEqual(1e-5);
        });
      }
    });
  }

  // Two "machines": network namespaces joined by a veth pair (needs root and iproute2, as CI has).
  it.skipIf(!netnsAvailable())('ranks on two hosts of a virtual network (MASTER_ADDR not loopback) give the same bits', async () => {
    const hosts = [`mc${process.pid}h0`, `mc${process.pid}h1`];
    const links = [`mc${process.pid % 100000}v0`, `mc${process.pid % 100000}v1`];
    const ip = (...args: string[]) => execFileSync('ip', args);
    try {
      for (const h of hosts) ip('netns', 'add', h);
      ip('link', 'add', links[0]!, 'type', 'veth', 'peer', 'name', links[1]!);
      for (const i of [0, 1]) {
        ip('link', 'set', links[i]!, 'netns', hosts[i]!);
        ip('-n', hosts[i]!, 'addr', 'add', `10.77.${process.pid % 250}.${i + 1}/24`, 'dev', links[i]!);
        ip('-n', hosts[i]!, 'link', 'set', links[i]!, 'up');
        ip('-n', hosts[i]!, 'link', 'set', 'lo', 'up');
      }
      const threads = await inProcess(dense, 2);
      const results = await runRanks(2, 29500, [[0, {}], [1, {}]], 30, {
        masterAddr: `10.77.${process.pid % 250}.1`, prefix: (rank) => ['ip', 'netns', 'exec', hosts[rank]!],
      });
      for (const [r, result] of results.entries()) {
        expect(result.error, `rank ${r}`).toBeUndefined();
        result.rows.forEach((row, i) => expect(sameBits(row, threads[i]!), `rank ${r}, row ${i}`).toBe(true));
      }
    } finally {
      for (const h of hosts) try { ip('netns', 'del', h); } catch { /* not made */ }
    }
  });

  it('sequences of their own interleaved on one model (KV snapshots saved and put back on every rank) give the threads\' bits', async () => {
    // Three sequences at once: every rank saves and restores its own part of each one's cache, in the same order.
    const sequences = [0, 1, 2].map((s) => [tokens.slice(0, 5 + s), ...tokens.slice(5 + s, 12).map((t) => [t])]);
    const model = await loadModel(dense, { tp: 2, cacheDir, maxTokens: 8 });
    const perSequence = await Promise.all(sequences.map(async (chunks) => {
      const sequence = model.sequence();
      const out: Float32Array[] = [];
      for (const chunk of chunks) out.push(...await sequence.forward(chunk));
      return out;
    }));
    model.close();
    const threads = perSequence.flat();
    const results = await runRanks(2, await freePort(), [0, 1].map((r) => [r, { dir: dense, sequences }] as [number, RankJob]));
    for (const [r, result] of results.entries()) {
      expect(result.error, `rank ${r}`).toBeUndefined();
      expect(result.rows).toHaveLength(threads.length);
      result.rows.forEach((row, i) => expect(sameBits(row, threads[i]!), `rank ${r}, row ${i}`).toBe(true));
    }
  });

  it('the CLI: generate on two processes prints, on rank 0 only, the tokens of --tp 2 in one process', async () => {
    const args = ['generate', '--model', dense, '--tokens', '1,2,3', '--max-tokens', '6', '--cache', cacheDir, '--temperature', '0.8', '--seed', '3'];
    const reference = await execa(process.execPath, ['--import', 'tsx', CLI_SCRIPT, ...args, '--tp', '2', '--json']);
    const expected = JSON.parse(reference.stdout).tokens as number[];
    const port = await freePort();
    const ranks = await Promise.all([0, 1].map((rank) => execa(process.execPath, ['--import', 'tsx', CLI_SCRIPT, ...args], {
      env: { RANK: String(rank), WORLD_SIZE: '2', MASTER_ADDR: 'localhost', MASTER_PORT: String(port) }, reject: false,
    })));
    expect(ranks.map((r) => r.exitCode)).toEqual([0, 0]);
    expect(ranks[0]!.stdout.trim()).toBe(expected.join(','));
    expect(ranks[1]!.stdout).toBe('');
    // Progress on stderr says which rank wrote it.
    expect(ranks[1]!.stderr).toContain(`[rank 1] rank 1 of 2: meeting the other ranks at localhost:${port}`);
    expect(ranks[0]!.stderr).toMatch(/^\[rank 0\] .*: prefill 3 tokens at [\d.]+ tokens\/s, decode 5 tokens/m);
  });

  it('rank 0 alone: gives up after MC_DIST_TIMEOUT_S, naming the rank that never came', async () => {
    const [r] = await runRanks(2, await freePort(), [[0, {}]], 2);
    expect(r!.error).toMatch(/^rank 0 of 2: rendezvous: timed out after 2 s waiting on port \d+ for rank\(s\) 1 of WORLD_SIZE 2: start one process per rank/);
    expect(r!.seconds).toBeLessThan(20);
  });

  it('rank 1 alone: says it could not reach rank 0 at MASTER_ADDR:MASTER_PORT', async () => {
    const port = await freePort();
    const [r] = await runRanks(2, port, [[1, {}]], 2);
    expect(r!.error).toMatch(new RegExp(`^rank 1 of 2: rendezvous: could not reach rank 0 at 127\\.0\\.0\\.1:${port} within 2 s \\(Connection refused\\)`));
  });

  it('a rank that loaded another model is refused, on both ranks, naming both', async () => {
    const other = join(work, 'dense-bf16');
    await writeRandomWeights(normalizeParams({ ...BASE, sliding_window: 6 }, 'dense'), other, { seed: 31, dtype: 'bf16' });
    await loadModel(other, { tp: 2, cacheDir, maxTokens: 8 }).then((m) => m.close());  // its library, into the cache
    const results = await runRanks(2, await freePort(), [[0, {}], [1, { dir: other }]], 20);
    expect(results[0]!.error).toMatch(/^rank 0 of 2: rendezvous: rank 1 loaded a different model: rank 0 has dense\.cpu\.f32\.tp2, checkpoint [0-9a-f]{16}, rank 1 has dense-bf16\.cpu\.bf16\.tp2, checkpoint [0-9a-f]{16}; every rank needs the same checkpoint/);
    expect(results[1]!.error).toMatch(/rank 1 of 2: rendezvous: rank 0 refused rank 1: rank 1 loaded a different model/);
    // The same shapes, build and name, other weights (another seed): told apart by the weights' first bytes.
    const reseeded = join(work, 'reseeded', 'dense');
    await writeRandomWeights(normalizeParams({ ...BASE, sliding_window: 6 }, 'dense'), reseeded, { seed: 77, dtype: 'f32' });
    const again = await runRanks(2, await freePort(), [[0, {}], [1, { dir: reseeded }]], 20);
    expect(again[0]!.error).toMatch(/rank 1 loaded a different model: rank 0 has dense\.cpu\.f32\.tp2, checkpoint ([0-9a-f]{16}), rank 1 has dense\.cpu\.f32\.tp2, checkpoint (?!\1)[0-9a-f]{16}/);
  });

  it('a rank that dies: the others fail with a message naming it, and do not hang', async () => {
    const results = await runRanks(2, await freePort(), [[0, {}], [1, { exitAfter: 2 }]], 20);
    expect(results[0]!.error).toMatch(/tensor-parallel rank 1 closed the connection \(its process ended\?\)/);
    expect(results[0]!.rows.length).toBe(5 + 1);  // the prefill's 5 rows and one decode step came through
  });

  it('a rank whose own forward fails: the others learn why at once, not after the timeout', async () => {
    const own = join(work, 'rank0', 'dense');  // same name: the same library key
    cpSync(dense, own, { recursive: true });
    const results = await runRanks(2, await freePort(), [[0, { dir: own, modifyAfter: 3 }], [1, {}]], 60);
    expect(results[0]!.error).toMatch(/consolidated\.safetensors: has been modified since it was mapped/);
    expect(results[1]!.error).toMatch(/^tensor-parallel rank 0 failed: .*consolidated\.safetensors: has been modified since it was mapped/);
    expect(results[1]!.seconds).toBeLessThan(30);  // far below the 60 s timeout
    expect(results[1]!.rows).toHaveLength(5 + 2);
  });

  it('ranks fed different tokens: both fail, naming the rank that differs', async () => {
    const calls = CALLS.map(([t, p, a], i): [number[], number, boolean] => [i === 1 ? [(t[0]! + 1) % 512] : t, p, a]);
    const results = await runRanks(2, await freePort(), [[0, {}], [1, { calls }]], 20);
    for (const r of results) expect(r.error).toMatch(/tensor-parallel rank 1 ran the same call with other token ids where rank 0 ran forward\(1 tokens at position 5, last logits\)/);
  });

  it('rank 0 ignores connections that are not ranks (junk, a malformed hello) and still forms the group', async () => {
    const port = await freePort();
    const rank0 = runRanks(2, port, [[0, {}]], 30);
    // What a port scanner or a health check might send, once rank 0 listens.
    const hello = Buffer.alloc(24);
    hello.writeUInt32LE(0x5054434d, 0);  // the protocol's magic, then a hello whose length lies
    hello.writeUInt32LE(1, 4);
    hello.writeBigUInt64LE(1000n, 16);
    for (const junk of [Buffer.from('GET / HTTP/1.0\r\n\r\n'), hello]) {
      for (let tries = 0; ; tries++) {
        const sent = await new Promise<boolean>((resolve) => {
          const socket = connect(port, '127.0.0.1', () => socket.end(junk, () => resolve(true)));
          socket.on('error', () => resolve(false));
        });
        if (sent) break;
        if (tries > 400) throw new Error('rank 0 never listened');
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    const [[r0], [r1]] = await Promise.all([rank0, runRanks(2, port, [[1, {}]], 30)]);
    expect(r0!.error).toBeUndefined();
    expect(r1!.error).toBeUndefined();
    expect(r1!.rows.map((row, i) => sameBits(row, r0!.rows[i]!))).toEqual(r0!.rows.map(() => true));
  });

  it('MASTER_PORT in use on rank 0: one line naming it', async () => {
    const server: Server = createServer();
    await new Promise<void>((resolve) => server.listen(0, resolve));
    const { port } = server.address() as AddressInfo;
    try {
      const [r] = await runRanks(2, port, [[0, {}]], 5);
      expect(r!.error).toMatch(new RegExp(`rendezvous: MASTER_PORT ${port} is already in use on rank 0's machine`));
    } finally {
      server.close();
    }
  });

  it('reads the environment torchrun sets, and names what is missing or wrong', () => {
    expect(distributedFromEnv({})).toBeUndefined();
    expect(distributedFromEnv({ WORLD_SIZE: '1', RANK: '0' })).toBeUndefined();
    expect(distributedFromEnv({ WORLD_SIZE: '4', RANK: '3', MASTER_ADDR: 'node0', LOCAL_RANK: '1', LOCAL_WORLD_SIZE: '2' }))
      .toEqual({ rank: 3, world: 4, masterAddr: 'node0', masterPort: 29500, localRank: 1, localWorld: 2, timeoutSeconds: undefined });
    const bad: Array<[NodeJS.ProcessEnv, RegExp]> = [
      [{ WORLD_SIZE: '2', MASTER_ADDR: 'a' }, /^environment: RANK: is not set but WORLD_SIZE is 2; launch one process per rank/],
      [{ WORLD_SIZE: '2', RANK: '2', MASTER_ADDR: 'a' }, /^environment: RANK: must be an integer from 0 to 1 \(got "2"\)/],
      [{ WORLD_SIZE: '3', RANK: '0', MASTER_ADDR: 'a' }, /^environment: WORLD_SIZE: 3 ranks cannot split a model here; use 2, 4, 8/],
      [{ WORLD_SIZE: '2', RANK: '0' }, /^environment: MASTER_ADDR: is not set but WORLD_SIZE is 2/],
      [{ WORLD_SIZE: '2', RANK: '0', MASTER_ADDR: 'a', MASTER_PORT: '70000' }, /^environment: MASTER_PORT: must be an integer from 1 to 65535/],
      [{ WORLD_SIZE: 'two' }, /^environment: WORLD_SIZE: must be an integer from 1 to 8 \(got "two"\)/],
    ];
    for (const [env, message] of bad) expect(() => distributedFromEnv(env)).toThrow(message);
  });

  it('checks options passed in code as the environment is checked, naming the option', async () => {
    const base = { rank: 0, world: 2 as const, masterAddr: '127.0.0.1', masterPort: 29500 };
    const bad: Array<[Record<string, unknown>, RegExp]> = [
      [{ world: 3 }, /^loadModel options: distributed\.world: must be one of 2, 4, 8 \(got 3\)/],
      [{ rank: 2 }, /^loadModel options: distributed\.rank: must be an integer from 0 to 1 \(got 2\)/],
      [{ masterAddr: ' ' }, /^loadModel options: distributed\.masterAddr: must be a host name or address/],
      [{ masterPort: 0 }, /^loadModel options: distributed\.masterPort: must be a TCP port \(got 0\)/],
      [{ timeoutSeconds: 0 }, /^loadModel options: distributed\.timeoutSeconds: must be from 1 to 86400 \(got 0\)/],
    ];
    for (const [change, message] of bad) {
      const error = await loadModel(dense, { cacheDir, distributed: { ...base, ...change } as never }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(RuntimeError);
      expect((error as Error).message).toMatch(message);
    }
  });

  it('refuses a tp that differs from the world size', async () => {
    const error = await loadModel(dense, { tp: 4, cacheDir, distributed: { rank: 0, world: 2, masterAddr: '127.0.0.1', masterPort: 1 } }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RuntimeError);
    expect((error as Error).message).toMatch(/^loadModel options: tp: is 4 but the world has 2 ranks \(WORLD_SIZE\); run 4 processes, or pass tp 2/);
  });
});
