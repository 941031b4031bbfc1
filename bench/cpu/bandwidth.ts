/**
 * The read-bandwidth probe (bandwidth.cpp), built with the flags our kernels use and kept running
 * beside an engine, so that decode steps are compared with the bandwidth of the same moment.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { buildTool } from './tools.js';

/** 256 MiB per pass: 5-9 ms at this machine's speeds, 8x its L3, so no pass reads from cache. */
const PROBE_BYTES = 2 ** 28;
const PROBE_PASSES = 2;

/** The probe's path under binDir, compiled when missing or older than its source. */
export function buildBandwidthProbe(binDir: string): string {
  return buildTool(binDir, 'bandwidth');
}

/** A probe process holding its buffer; measure() runs one measurement (about 30 ms) and returns GB/s. */
export class BandwidthProbe {
  private readonly lines: AsyncIterator<string>;

  private constructor(private readonly child: ChildProcessWithoutNullStreams) {
    this.lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  }

  /** Starts the probe in a process of its own (its buffer adds nothing to the engine's resident memory). */
  static async start(exe: string, threads: number): Promise<BandwidthProbe> {
    const child = spawn(exe, [String(PROBE_BYTES), String(PROBE_PASSES), '--serve'], { env: { ...process.env, OMP_NUM_THREADS: String(threads) } });
    const probe = new BandwidthProbe(child);
    await probe.next(); // the first measurement comes unasked, once the buffer is in place
    return probe;
  }

  async measure(): Promise<number> {
    this.child.stdin.write('\n');
    return this.next();
  }

  close(): void {
    this.child.stdin.end();
  }

  private async next(): Promise<number> {
    const { value, done } = await this.lines.next();
    if (done) throw new Error('the bandwidth probe exited');
    return (JSON.parse(value) as { gb_per_s: number }).gb_per_s;
  }
}
