/** What the report says about the machine and how busy it was while measuring. */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

export function machineDescription(): string {
  const info = readFileSync('/proc/cpuinfo', 'utf8');
  const field = (name: string) => new RegExp(`^${name}\\s*:\\s*(.*)$`, 'm').exec(info)?.[1]?.trim() ?? '?';
  const flags = field('flags').split(' ');
  const isa = ['avx512f', 'avx512_bf16', 'avx512_vnni', 'avx2', 'fma'].filter((f) => flags.includes(f)).join(' ');
  const family = Number(field('cpu family'));
  const model = Number(field('model'));
  // AMD family 0x19 (25) models 0x10-0x1f are Zen 4 (Genoa); 0x1a (26) is Zen 5.
  const zen = family === 25 && model >= 0x10 && model <= 0x1f ? ', Zen 4' : family === 26 ? ', Zen 5' : '';
  const memKiB = Number(/^MemTotal:\s+(\d+)/m.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0);
  return `${field('model name')} (family ${family} model ${model}${zen}), ${availableParallelism()} cores, ${isa}, ${(memKiB / 2 ** 20).toFixed(0)} GiB RAM`;
}

function cpuTicks(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const idle = line[3]! + (line[4] ?? 0);
  const total = line.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

/** Fraction of all cores busy over `ms` (other processes, since nothing of ours runs meanwhile). */
export async function busyFraction(ms = 1000): Promise<number> {
  const a = cpuTicks();
  await new Promise((r) => setTimeout(r, ms));
  const b = cpuTicks();
  return b.total === a.total ? 0 : (b.busy - a.busy) / (b.total - a.total);
}

/** Waits (up to `maxWaitMs`) until other processes leave the cores nearly idle; returns the last busy fraction. */
export async function waitForQuiet(maxWaitMs: number, log: (line: string) => void): Promise<number> {
  const deadline = Date.now() + maxWaitMs;
  let busy = await busyFraction();
  let said = false;
  while (busy > 0.1 && Date.now() < deadline) {
    if (!said) log(`other processes keep ${(busy * 100).toFixed(0)}% of the cores busy; waiting up to ${maxWaitMs / 1000} s for quiet`);
    said = true;
    busy = await busyFraction(2000);
  }
  return busy;
}
