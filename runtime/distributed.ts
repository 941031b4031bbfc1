/**
 * One process per tensor-parallel rank, on one machine or several: where the ranks meet, read from
 * the environment the way torchrun (and NCCL users generally) set it.
 *
 *   RANK, WORLD_SIZE               this process's rank and the number of ranks (= --tp)
 *   MASTER_ADDR, MASTER_PORT       where rank 0 listens (default port 29500, as torchrun's)
 *   LOCAL_RANK, LOCAL_WORLD_SIZE   rank and ranks on this machine: the GPU ordinal, and the share of
 *                                  the CPU cores each process takes
 *   MC_DIST_TIMEOUT_S              how long to wait for the others (default 600 s)
 */
import { TP_SIZES, type TpSize } from '../compiler/plan/types.js';
import { RuntimeError } from './errors.js';

export interface DistributedOptions {
  rank: number;
  world: TpSize;
  /** Rank 0's host name or address (rank 0 itself listens on every interface). */
  masterAddr: string;
  masterPort: number;
  /** Rank among this machine's processes: a GPU library runs on this device (default: rank). */
  localRank?: number;
  /** Processes on this machine: each takes its share of the cores (default: world on a loopback MASTER_ADDR, else 1). */
  localWorld?: number;
  /** Longest wait for the other ranks, at the rendezvous and inside a call (default 600). */
  timeoutSeconds?: number;
}

/** An environment as process.env holds it (spelled out so that the published types need no @types/node). */
export type Environment = Readonly<Record<string, string | undefined>>;

export const DEFAULT_MASTER_PORT = 29500;
/** The world sizes that split a model over processes (TP 1 needs no other process). */
const WORLD_SIZES = TP_SIZES.filter((t) => t > 1);
export const DEFAULT_TIMEOUT_SECONDS = 600;

function envInt(env: Environment, name: string, min: number, max: number, fix: string): number | undefined {
  const raw = env[name];
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!/^\s*\d+\s*$/.test(raw) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new RuntimeError('environment', name, `must be an integer from ${min} to ${max} (got ${JSON.stringify(raw)})`, fix);
  }
  return n;
}

/**
 * The distributed set-up from the environment, or undefined when WORLD_SIZE is unset or 1 (one
 * process holds every rank). Throws a RuntimeError naming the variable that is missing or wrong.
 */
export function distributedFromEnv(env: Environment = process.env): DistributedOptions | undefined {
  const launch = 'launch one process per rank with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set (e.g. by torchrun)';
  const world = envInt(env, 'WORLD_SIZE', 1, 8, `set it to the number of tensor-parallel ranks (${WORLD_SIZES.join(', ')})`);
  if (world === undefined || world === 1) return undefined;
  if (!WORLD_SIZES.includes(world as TpSize)) {
    throw new RuntimeError('environment', 'WORLD_SIZE', `${world} ranks cannot split a model here`, `use ${WORLD_SIZES.join(', ')}`);
  }
  const rank = envInt(env, 'RANK', 0, world - 1, `give every process its own rank from 0 to ${world - 1}`);
  if (rank === undefined) throw new RuntimeError('environment', 'RANK', `is not set but WORLD_SIZE is ${world}`, launch);
  const masterAddr = env.MASTER_ADDR?.trim();
  if (!masterAddr) throw new RuntimeError('environment', 'MASTER_ADDR', `is not set but WORLD_SIZE is ${world}`, `set it to rank 0's host name or address on every rank; ${launch}`);
  const masterPort = envInt(env, 'MASTER_PORT', 1, 65535, 'set the same free TCP port on every rank, e.g. 29500') ?? DEFAULT_MASTER_PORT;
  const localRank = envInt(env, 'LOCAL_RANK', 0, 4095, 'set it to the rank among this machine\'s processes (the GPU it uses)');
  const localWorld = envInt(env, 'LOCAL_WORLD_SIZE', 1, 4096, 'set it to the number of ranks on this machine');
  const timeoutSeconds = envInt(env, 'MC_DIST_TIMEOUT_S', 1, 86400, 'set it to the seconds to wait for the other ranks, e.g. 600');
  return { rank, world: world as TpSize, masterAddr, masterPort, localRank, localWorld, timeoutSeconds };
}

/** Whether `host` names this machine's loopback interface (all ranks on one machine). */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** Checks options passed in code (the environment's are checked by distributedFromEnv). */
export function checkDistributed(d: DistributedOptions): Required<DistributedOptions> {
  const where = 'loadModel options';
  if (!WORLD_SIZES.includes(d.world)) throw new RuntimeError(where, 'distributed.world', `must be one of ${WORLD_SIZES.join(', ')} (got ${d.world})`, 'pass the number of ranks');
  if (!Number.isSafeInteger(d.rank) || d.rank < 0 || d.rank >= d.world) throw new RuntimeError(where, 'distributed.rank', `must be an integer from 0 to ${d.world - 1} (got ${d.rank})`, 'give every process its own rank');
  if (typeof d.masterAddr !== 'string' || d.masterAddr.trim() === '') throw new RuntimeError(where, 'distributed.masterAddr', 'must be a host name or address', "pass rank 0's address");
  if (!Number.isSafeInteger(d.masterPort) || d.masterPort < 1 || d.masterPort > 65535) throw new RuntimeError(where, 'distributed.masterPort', `must be a TCP port (got ${d.masterPort})`, 'pass e.g. 29500');
  const localRank = d.localRank ?? d.rank;
  const localWorld = d.localWorld ?? (isLoopback(d.masterAddr) ? d.world : 1);
  if (!Number.isSafeInteger(localRank) || localRank < 0) throw new RuntimeError(where, 'distributed.localRank', `must be a non-negative integer (got ${localRank})`, 'pass the GPU ordinal of this rank');
  if (!Number.isSafeInteger(localWorld) || localWorld < 1) throw new RuntimeError(where, 'distributed.localWorld', `must be a positive integer (got ${localWorld})`, 'pass the number of ranks on this machine');
  const timeoutSeconds = d.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS;
  if (!(timeoutSeconds >= 1) || timeoutSeconds > 86400) throw new RuntimeError(where, 'distributed.timeoutSeconds', `must be from 1 to 86400 (got ${timeoutSeconds})`, 'pass e.g. 600');
  return { ...d, masterAddr: d.masterAddr.trim(), localRank, localWorld, timeoutSeconds };
}
