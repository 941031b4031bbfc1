/**
 * The CPU section of bench/RESULTS.md: the latest `npm run bench` table goes between two markers,
 * so the hand-written history of kernel changes (predictions and results) around it stays.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import type { DecodeSegment, EngineResult } from './protocol.js';

export interface ModelRow {
  model: string;
  kind: 'dense' | 'moe';
  dtype: string;
  paramsTotal: number;
  paramsActive: number;
  promptTokens: number;
  decodeTokens: number;
  /** Active weights + KV cache read per decoded token at the mean decode context. */
  bytesPerToken: number;
  /** Checkpoint bytes (safetensors) and KV cache as allocated. */
  weightBytes: number;
  kvBytes: number;
  ours: EngineResult;
  llama: EngineResult;
}

export interface Report {
  date: string;
  machine: string;
  command: string;
  threads: number;
  /** Busy fraction of the cores (other processes) just before each child process started. */
  busy: number[];
  rows: ModelRow[];
}

const BEGIN = '<!-- cpu-bench:begin (written by bench/cpu/run.ts; edits here are overwritten) -->';
const END = '<!-- cpu-bench:end -->';

const f1 = (x: number) => x.toFixed(1);
const f2 = (x: number) => x.toFixed(2);
const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
const pct = (x: number) => `${(100 * x).toFixed(0)}%`;
const bw = (b: { min: number; max: number }) => `${b.min.toFixed(0)}-${b.max.toFixed(0)} GB/s`;

export function prefillRate(r: EngineResult, tokens: number): number {
  return tokens / Math.min(...r.prefillSeconds);
}

/**
 * Decode speed: the fastest round's tokens/s. Fraction of the limit: per segment of that round, its
 * bytes/s over the bandwidth probed around it; the median over the segments (and the bandwidths seen).
 */
export function bestDecode(r: EngineResult, row: Pick<ModelRow, 'bytesPerToken'>) {
  const total = (round: DecodeSegment[]) => round.reduce((s, g) => s + g.seconds, 0);
  const round = r.decodeSegments.reduce((a, b) => (total(b) < total(a) ? b : a));
  const tokens = round.reduce((s, g) => s + g.tokens, 0);
  const fractions = round.map((g) => (g.tokens * row.bytesPerToken) / g.seconds / (g.gbPerSecond * 1e9)).sort((a, b) => a - b);
  const bandwidths = round.map((g) => g.gbPerSecond);
  return {
    rate: tokens / total(round),
    ofLimit: fractions[Math.floor(fractions.length / 2)]!,
    bandwidth: { min: Math.min(...bandwidths), max: Math.max(...bandwidths) },
  };
}

export function renderTable(rep: Report): string {
  const lines: string[] = [];
  const busiest = Math.max(...rep.busy);
  lines.push(`Latest run: ${rep.date} · \`${rep.command}\``, '');
  lines.push(`Machine: ${rep.machine}. Both engines on ${rep.threads} threads. ` +
    `Other processes kept the cores at most ${pct(busiest)} busy just before a child process started${busiest > 0.1 ? ' (a busy machine: figures are less trustworthy)' : ''}.`, '');

  lines.push('**Ratios, ours / llama.cpp** (higher is better for speed, lower for memory)', '');
  lines.push('| model | weights | prefill 512 | decode 128 | peak memory |', '|---|---|---|---|---|');
  for (const r of rep.rows) {
    const pf = prefillRate(r.ours, r.promptTokens) / prefillRate(r.llama, r.promptTokens);
    const dc = bestDecode(r.ours, r).rate / bestDecode(r.llama, r).rate;
    lines.push(`| ${r.kind === 'dense' ? 'dense' : 'MoE 8×, top-2'} | ${r.dtype} | ${f2(pf)}× | ${f2(dc)}× | ${f2(r.ours.peakBytes / r.llama.peakBytes)}× |`);
  }
  lines.push('', '**Absolute figures**', '');
  lines.push('| model | params (active) | prefill tok/s ours · llama.cpp | decode tok/s ours · llama.cpp | decode, fraction of its limit ours · llama.cpp | peak RSS ours · llama.cpp (over Node) | weights + KV + 10% |');
  lines.push('|---|---|---|---|---|---|---|');
  for (const r of rep.rows) {
    const o = bestDecode(r.ours, r);
    const l = bestDecode(r.llama, r);
    lines.push(`| ${r.model} | ${(r.paramsTotal / 1e6).toFixed(0)} M (${(r.paramsActive / 1e6).toFixed(0)} M) | ` +
      `${f1(prefillRate(r.ours, r.promptTokens))} · ${f1(prefillRate(r.llama, r.promptTokens))} | ${f1(o.rate)} · ${f1(l.rate)} | ` +
      `${pct(o.ofLimit)} (${bw(o.bandwidth)}) · ${pct(l.ofLimit)} (${bw(l.bandwidth)}) | ` +
      `${mib(r.ours.peakBytes)} (${mib(r.ours.peakBytes - r.ours.rssBeforeBytes)}) · ${mib(r.llama.peakBytes)} (${mib(r.llama.peakBytes - r.llama.rssBeforeBytes)}) | ` +
      `${mib((r.weightBytes + r.kvBytes) * 1.1)} |`);
  }
  const first = rep.rows[0];
  lines.push('');
  lines.push(`- Prefill: one sequence of ${first?.promptTokens} random token ids; decode: ${first?.decodeTokens} further fixed token ids, one per step ` +
    '(the same ids for both engines, so MoE routes alike), each step returning the last position\'s logits. Each engine runs in a child process ' +
    'of its own: warm-up, then rounds of (prefill, decode); the best prefill and the best decode round are reported.');
  lines.push('- Decode limit: bytes read per token ÷ read bandwidth. Bytes: the active weights (top-2 of 8 experts for the MoE; one embedding row) plus ' +
    `the KV cache at the mean decode context: ${rep.rows.map((r) => `${r.model} ${(r.bytesPerToken / 1e6).toFixed(0)} MB`).join(', ')}. ` +
    'Bandwidth: bench/cpu/bandwidth.cpp (best of 2 passes over 256 MiB, one stream or 8 streams per thread, same threads) in a process of its own, ' +
    'probed between segments of 16 decode steps (probe time excluded from the decode time): this machine\'s memory speed drifts between ~30 and ' +
    '~55 GB/s within seconds, so each segment is compared with the larger of the probes just before and after it; the figure is the median ' +
    'over the segments of the fastest round, in brackets the bandwidths seen.');
  lines.push('- Peak RSS: VmHWM of the engine\'s child process, Node included; in brackets, the growth over the resident set before the engine ' +
    'loaded. Both engines memory-map the weights, so touched pages count. Bound: checkpoint bytes + KV cache as allocated (1024 positions) + 10%.');
  lines.push('- Page cache: each engine starts with its checkpoint file dropped from the page cache (`dd iflag=nocache count=0`), as after a ' +
    'reboot, so the file is read from disk by that engine\'s own mapping (ours asks for 2 MiB pages, MADV_HUGEPAGE; a file cached in small ' +
    'pages by whoever wrote it would keep them).');
  const llamaNotes = [...new Set(rep.rows.flatMap((r) => r.llama.notes.filter((n) => !n.startsWith('KV cache'))))];
  const kv = [...new Set(rep.rows.map((r) => `${r.llama.notes.find((n) => n.startsWith('KV cache'))?.slice(9)} for ${r.dtype}`))];
  lines.push(`- llama.cpp: ${llamaNotes.join(', ')}; KV cache ${kv.join(', ')} weights (ours keeps K and V in the weight dtype).`);
  return lines.join('\n');
}

/** Replaces the table between the markers, creating the file or the CPU section when absent. */
export function writeReport(path: string, table: string): void {
  const block = `${BEGIN}\n${table}\n${END}`;
  const section = `## CPU\n\nRun with \`npm run bench\` (bench/cpu/run.ts).\n\n${block}\n`;
  if (!existsSync(path)) {
    writeFileSync(path, `# Benchmarks\n\n${section}`);
    return;
  }
  const text = readFileSync(path, 'utf8');
  const a = text.indexOf(BEGIN);
  const b = text.indexOf(END);
  if (a >= 0 && b > a) writeFileSync(path, text.slice(0, a) + block + text.slice(b + END.length));
  else writeFileSync(path, `${text.trimEnd()}\n\n${section}`);
}
