/**
 * Pieces the CPU benchmark scripts share: building a C++ tool of bench/cpu (bandwidth.cpp,
 * decode-step.cpp) with our kernels' flags, and talking to a child process that answers each request
 * line with one JSON line (decode-child.ts, decode-step --serve).
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, '..', '..');

/**
 * bench/cpu/NAME.cpp compiled to binDir/NAME (with the ABI and the kernels' headers on the include
 * path), when missing or older than its source or than templates/include/mc_cpu.hpp; returns its path.
 */
export function buildTool(binDir: string, name: string): string {
  mkdirSync(binDir, { recursive: true });
  const source = join(HERE, `${name}.cpp`);
  const kernels = join(ROOT, 'templates', 'include', 'mc_cpu.hpp');
  const exe = join(binDir, name);
  const built = existsSync(exe) ? statSync(exe).mtimeMs : 0;
  if (built < statSync(source).mtimeMs || built < statSync(kernels).mtimeMs) {
    execFileSync('g++', ['-O3', '-march=native', '-fopenmp', '-std=c++20', `-I${join(ROOT, 'runtime', 'abi')}`, `-I${dirname(kernels)}`, source, '-o', exe],
      { stdio: 'inherit' });
  }
  return exe;
}

export interface ServingChild {
  /** The child's first line, sent unasked once it is ready. */
  ready: Record<string, number>;
  /** Writes `request` as a line and resolves to the answer line. */
  ask(request: string | number): Promise<Record<string, number>>;
  close(): void;
}

/** Starts `command` with OMP_NUM_THREADS = threads (and `env` on top) and waits for its ready line. */
export async function servingChild(command: string, argv: string[], threads: number, env: Record<string, string> = {}): Promise<ServingChild> {
  const proc = spawn(command, argv, { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, OMP_NUM_THREADS: String(threads), ...env } });
  const lines = createInterface({ input: proc.stdout! })[Symbol.asyncIterator]();
  const next = async () => {
    const { value, done } = await lines.next();
    if (done) throw new Error(`${command} ${argv.join(' ')}: exited without an answer`);
    return JSON.parse(value as string) as Record<string, number>;
  };
  const ready = await next();
  return {
    ready,
    ask: async (request) => (proc.stdin!.write(`${request}\n`), next()),
    close: () => proc.stdin!.end(),
  };
}


/**
 * Rounds of A B B A, so that a drift of this machine's memory speed falls on both alike: the
 * figures of a and b, index i of one paired with index i of the other.
 */
export async function inTurns(a: () => Promise<number>, b: () => Promise<number>, rounds: number): Promise<{ a: number[]; b: number[] }> {
  const out = { a: [] as number[], b: [] as number[] };
  for (let r = 0; r < rounds; r++) {
    const a1 = await a(), b1 = await b(), b2 = await b(), a2 = await a();
    out.a.push(a1, a2);
    out.b.push(b1, b2);
  }
  return out;
}

/**
 * Drops a file from the page cache (GNU dd: `iflag=nocache count=0` advises the kernel to drop the
 * whole file; pages some process maps stay). The next mapping reads it from disk, in the folio size
 * that mapping asks for: a file written a moment ago is otherwise cached in small pages.
 */
export function dropFromPageCache(path: string): void {
  try {
    execFileSync('sync', [path]);  // dirty pages (a file just written) are not dropped: write them first
    execFileSync('dd', [`if=${path}`, 'iflag=nocache', 'count=0', 'status=none']);
  } catch (err) {
    process.stderr.write(`bench: could not drop ${path} from the page cache (${(err as Error).message.split('\n')[0]}); it is read as cached\n`);
  }
}
