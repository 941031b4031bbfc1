/**
 * Nsight Compute's CSV for profile.ts: `ncu --csv --page details --print-units base --metrics ...`
 * prints one row per (profiled kernel, metric) after its ==PROF== lines; this turns it into one
 * record per kernel in launch order, finds one whole decode step in it and sums it per kernel.
 */

/** The metrics profile.ts asks for; each becomes one field of a KernelLaunch. */
export const NCU_METRICS = {
  durationNs: 'gpu__time_duration.sum',
  dramReadBytes: 'dram__bytes_read.sum',
  dramWriteBytes: 'dram__bytes_write.sum',
  grid: 'launch__grid_size',
  block: 'launch__block_size',
} as const;

export interface KernelLaunch {
  /** ncu's result ID: the order of profiling. */
  id: number;
  /** Demangled, with template arguments and parameters. */
  name: string;
  short: string;
  durationNs: number;
  dramReadBytes: number;
  dramWriteBytes: number;
  /** Blocks in the grid and threads per block. */
  grid: number;
  block: number;
}

/** One line of RFC 4180 CSV (ncu quotes every field; quotes inside are doubled). */
export function parseCsvLine(line: string): string[] {
  const fields: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]!;
    if (quoted && ch === '"' && line[i + 1] === '"') {
      field += '"';
      i++;
    } else if (ch === '"') {
      quoted = !quoted;
    } else if (ch === ',' && !quoted) {
      fields.push(field);
      field = '';
    } else {
      field += ch;
    }
  }
  fields.push(field);
  return fields;
}

// --print-units base should leave only nsecond and byte; the others are ncu's auto-scaled spellings.
const SCALE: Record<string, number> = {
  nsecond: 1, usecond: 1e3, msecond: 1e6, second: 1e9,
  byte: 1, Kbyte: 1e3, Mbyte: 1e6, Gbyte: 1e9, Tbyte: 1e12, KB: 1e3, MB: 1e6, GB: 1e9, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3,
};

/** A metric value in ns, bytes or plain counts; ncu writes thousands separators in en_US style ("1,234.5"). */
export function metricValue(value: string, unit: string): number {
  const scale = SCALE[unit] ?? (/byte|second/.test(unit) ? undefined : 1);  // counts: "", "block", "thread"
  if (scale === undefined) throw new Error(`ncu metric unit ${JSON.stringify(unit)} is not one this parser knows`);
  const x = Number(value.replace(/,/g, ''));
  if (Number.isNaN(x)) throw new Error(`ncu metric value ${JSON.stringify(value)} is not a number`);
  return x * scale;
}

/** Kernels of the CSV in profiling order. Lines before the header (==PROF==, the program's own output) are skipped. */
export function parseNcuCsv(text: string): KernelLaunch[] {
  const lines = text.split(/\r?\n/);
  const start = lines.findIndex((l) => l.startsWith('"ID",'));
  if (start < 0) return [];
  const header = parseCsvLine(lines[start]!);
  const col = (name: string) => {
    const i = header.indexOf(name);
    if (i < 0) throw new Error(`ncu CSV has no column ${JSON.stringify(name)} (columns: ${header.join(', ')}); profile.ts reads --page details`);
    return i;
  };
  const [idCol, nameCol, metricCol, unitCol, valueCol] = ['ID', 'Kernel Name', 'Metric Name', 'Metric Unit', 'Metric Value'].map(col) as [number, number, number, number, number];
  const byId = new Map<number, KernelLaunch>();
  const fieldOf = Object.fromEntries(Object.entries(NCU_METRICS).map(([field, metric]) => [metric, field])) as Record<string, keyof typeof NCU_METRICS>;
  for (const line of lines.slice(start + 1)) {
    if (!line.startsWith('"')) continue;  // ==PROF== / ==WARNING== lines, blank lines
    const f = parseCsvLine(line);
    const id = Number(f[idCol]);
    let k = byId.get(id);
    if (k === undefined) {
      const name = f[nameCol]!;
      k = { id, name, short: shortKernelName(name), durationNs: NaN, dramReadBytes: NaN, dramWriteBytes: NaN, grid: NaN, block: NaN };
      byId.set(id, k);
    }
    const field = fieldOf[f[metricCol]!];
    if (field !== undefined) k[field] = metricValue(f[valueCol]!, f[unitCol]!);
  }
  return [...byId.values()].sort((a, b) => a.id - b.id);
}

/** Index of the first of `chars` outside every <…> and (…), searching from `from`; -1 if none. */
function topLevel(s: string, chars: string, from = 0): number {
  let depth = 0;
  for (let i = from; i < s.length; i++) {
    const ch = s[i]!;
    if (depth === 0 && chars.includes(ch)) return i;
    if (ch === '<' || ch === '(') depth++;
    else if (ch === '>' || ch === ')') depth--;
  }
  return -1;
}

/**
 * A demangled kernel name cut to its namespace and function, plus the fused kernel it runs when it
 * is one of mc_cuda.cuh's engines over an Op type (`mc::gemv_kernel<wo_residual::Decode>(…)` →
 * `mc::gemv_kernel<wo_residual::Decode>`); numeric template arguments (shapes, windows) are dropped:
 * `void mc::attention_decode_kernel<128, 4, …>(…)` → `mc::attention_decode_kernel`.
 */
export function shortKernelName(demangled: string): string {
  let s = demangled.replace(/\(anonymous namespace\)::/g, '').trim();
  if (s.startsWith('void ')) s = s.slice(5);
  const params = topLevel(s, '(');
  if (params >= 0) s = s.slice(0, params);
  const open = topLevel(s, '<');
  if (open < 0) return s.trim();
  const fn = s.slice(0, open).trim();
  const args = s.slice(open + 1, s.lastIndexOf('>'));
  const comma = topLevel(args, ',');
  const first = (comma < 0 ? args : args.slice(0, comma)).trim();
  const op = /^(?:const\s+)?([A-Za-z_]\w*(?:::[A-Za-z_]\w*)+)/.exec(first);
  return op === null ? fn : `${fn}<${op[1]}>`;
}

/**
 * One whole decode step among the launches: the shortest period of the sequence of kernel names
 * (every step replays the same graph), started at its embedding lookup when there is one. Needs at
 * least two whole periods in the window; null otherwise.
 */
export function findStep(launches: readonly KernelLaunch[]): { start: number; length: number } | null {
  const n = launches.length;
  for (let p = 1; 2 * p <= n; p++) {
    let periodic = true;
    for (let k = 0; k + p < n && periodic; k++) periodic = launches[k]!.name === launches[k + p]!.name;
    if (!periodic) continue;
    const first = launches.slice(0, p).findIndex((l) => l.short.startsWith('embedding_lookup::'));
    return { start: Math.max(0, first), length: p };
  }
  return null;
}

export interface KernelGroup {
  short: string;
  count: number;
  totalNs: number;
  dramReadBytes: number;
  dramWriteBytes: number;
  /** Distinct grid and block sizes, ascending. */
  grids: number[];
  blocks: number[];
}

/** The step's launches grouped by short name, in the order each first runs. */
export function groupByKernel(step: readonly KernelLaunch[]): KernelGroup[] {
  const groups = new Map<string, KernelGroup>();
  for (const k of step) {
    let g = groups.get(k.short);
    if (g === undefined) groups.set(k.short, (g = { short: k.short, count: 0, totalNs: 0, dramReadBytes: 0, dramWriteBytes: 0, grids: [], blocks: [] }));
    g.count++;
    g.totalNs += k.durationNs;
    g.dramReadBytes += k.dramReadBytes;
    g.dramWriteBytes += k.dramWriteBytes;
    if (!g.grids.includes(k.grid)) g.grids.push(k.grid);
    if (!g.blocks.includes(k.block)) g.blocks.push(k.block);
  }
  for (const g of groups.values()) {
    g.grids.sort((a, b) => a - b);
    g.blocks.sort((a, b) => a - b);
  }
  return [...groups.values()];
}
