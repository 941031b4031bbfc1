/**
 * What the orchestrator (run.ts) and each engine's child process exchange: the job as one JSON
 * argument, the result as one JSON line on stdout prefixed with RESULT_PREFIX. Each engine runs in a
 * process of its own so that its peak resident memory (VmHWM) is its alone.
 */
import { readFileSync } from 'node:fs';
import type { BandwidthProbe } from './bandwidth.js';

export const RESULT_PREFIX = 'BENCH_RESULT ';

export interface EngineJob {
  /** Model directory (ours) or GGUF file (llama.cpp). */
  path: string;
  threads: number;
  /** Prompt token ids, prefilled as one sequence. */
  prompt: number[];
  /** Token ids fed one at a time after the prompt (the same for both engines, so MoE routes alike). */
  decode: number[];
  /** Timed rounds of (prefill of the prompt as a new sequence, decode of `decode`); the best of each is reported. */
  repeats: number;
  /** llama.cpp only: KV cache element type. */
  kvType?: 'F32' | 'F16' | 'BF16';
  /** Ours only: build cache directory. */
  cacheDir?: string;
  /** The bandwidth probe (bench/cpu/bandwidth.cpp, built), run between decode segments. */
  bandwidthExe: string;
}

export interface EngineResult {
  prefillSeconds: number[];
  /** Per decode round, its segments of SEGMENT_TOKENS steps: seconds, and the read bandwidth (GB/s) probed around each. */
  decodeSegments: DecodeSegment[][];
  /** Resident memory of the process before the engine loaded, and its peak, in bytes. */
  rssBeforeBytes: number;
  peakBytes: number;
  /** Free-form facts about the engine's setup (library, KV type, …). */
  notes: string[];
}

/** VmHWM (peak resident set) and VmRSS of this process, in bytes. */
export function residentMemory(): { peak: number; current: number } {
  const status = readFileSync('/proc/self/status', 'utf8');
  const field = (name: string) => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status);
    if (m === null) throw new Error(`/proc/self/status has no ${name}`);
    return Number(m[1]) * 1024;
  };
  return { peak: field('VmHWM'), current: field('VmRSS') };
}

export function readJob(): EngineJob {
  const arg = process.argv[2];
  if (arg === undefined) throw new Error('usage: <engine>.ts <job JSON>');
  return JSON.parse(arg) as EngineJob;
}

export function sendResult(result: EngineResult): void {
  process.stdout.write(`${RESULT_PREFIX}${JSON.stringify(result)}\n`);
}

export const seconds = (since: number) => (performance.now() - since) / 1000;

/** Decode steps timed together between two bandwidth probes. */
export interface DecodeSegment {
  tokens: number;
  seconds: number;
  /** The larger of the probes just before and just after the segment. */
  gbPerSecond: number;
}

/** Decode steps per segment: about half a second of decoding, between this machine's drifts in memory speed. */
export const SEGMENT_TOKENS = 16;

/**
 * Runs `step(i)` for i < n in segments of SEGMENT_TOKENS, timing each segment (probes excluded) and
 * probing the read bandwidth between segments, so each segment is compared with its own moment.
 */
export async function timedDecode(n: number, probe: BandwidthProbe, step: (i: number) => Promise<void>): Promise<DecodeSegment[]> {
  const segments: DecodeSegment[] = [];
  let before = await probe.measure();
  for (let i0 = 0; i0 < n; i0 += SEGMENT_TOKENS) {
    const i1 = Math.min(n, i0 + SEGMENT_TOKENS);
    const started = performance.now();
    for (let i = i0; i < i1; i++) await step(i);
    const elapsed = seconds(started);
    const after = await probe.measure();
    segments.push({ tokens: i1 - i0, seconds: elapsed, gbPerSecond: Math.max(before, after) });
    before = after;
  }
  return segments;
}
