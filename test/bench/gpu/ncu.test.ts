/**
 * Reading Nsight Compute's CSV for bench/gpu/profile.ts (no GPU or ncu needed): the layout is ncu's
 * `--csv --page details --print-units base` (one row per kernel and metric), the kernel names are
 * the demangled names of our generated libraries (nm -C of bench-mistral-7b-v0.1.cuda.bf16.tp1).
 */
import { describe, expect, it } from 'vitest';
import { findStep, groupByKernel, metricValue, NCU_METRICS, parseCsvLine, parseNcuCsv, shortKernelName } from '../../../bench/gpu/ncu.js';

const EMBED = 'embedding_lookup::kernel(int const*, int, __nv_bfloat16 const*, float*)';
const QKV = 'void mc::gemv_kernel<rmsnorm_qkv_rope_cache::Decode<1024> >(rmsnorm_qkv_rope_cache::Decode<1024>)';
const ATTN = 'void mc::attention_decode_kernel<128, 4, 8, 32, 4096, 1024, __nv_bfloat16>(float const*, __nv_bfloat16 const*, __nv_bfloat16 const*, int const*, float*)';
const COMBINE = 'void mc::attention_combine_kernel<128, 32>(float const*, float*)';
const WO = 'void mc::gemv_kernel<wo_residual::Decode>(wo_residual::Decode)';
const OUT = 'void mc::gemv_kernel<rmsnorm_output::Decode>(rmsnorm_output::Decode)';

/** Two layers of qkv, attention, combine, wo between the embedding and the output. */
const STEP = [EMBED, QKV, ATTN, COMBINE, WO, QKV, ATTN, COMBINE, WO, OUT];

function csv(names: string[]): string {
  const header = ['ID', 'Process ID', 'Process Name', 'Host Name', 'Kernel Name', 'Context', 'Stream', 'Block Size', 'Grid Size', 'Device', 'CC', 'Section Name', 'Metric Name', 'Metric Unit', 'Metric Value'];
  const q = (fields: Array<string | number>) => fields.map((f) => `"${String(f).replace(/"/g, '""')}"`).join(',');
  const rows = ['==PROF== Connected to process 4242 (/tmp/node)', '{"child":{"key":"the child\'s own line"}}', q(header)];
  names.forEach((name, id) => {
    const metrics: Array<[string, string, string]> = [
      [NCU_METRICS.durationNs, 'nsecond', (10_000 + 1000 * (id % STEP.length)).toLocaleString('en-US')],
      [NCU_METRICS.dramReadBytes, 'byte', (30_000_000).toLocaleString('en-US')],
      [NCU_METRICS.dramWriteBytes, 'byte', '4,096'],
      [NCU_METRICS.grid, '', name === ATTN ? '256' : '132'],
      [NCU_METRICS.block, '', '256'],
    ];
    for (const [metric, unit, value] of metrics) rows.push(q([id, 4242, 'node', '127.0.0.1', name, 1, 7, '(256, 1, 1)', '(132, 1, 1)', 0, '9.0', 'Command line profiler metrics', metric, unit, value]));
  });
  rows.push('==PROF== Disconnected from process 4242');
  return rows.join('\n') + '\n';
}

describe('shortKernelName', () => {
  it('keeps the fused kernel an engine runs and drops the parameters', () => {
    expect(shortKernelName(QKV)).toBe('mc::gemv_kernel<rmsnorm_qkv_rope_cache::Decode>');
    expect(shortKernelName(WO)).toBe('mc::gemv_kernel<wo_residual::Decode>');
    expect(shortKernelName('void mc::gemm_kernel<w2_residual::Prefill, mc::GemmTile<128, 128, 64, 32, 2> >(w2_residual::Prefill)')).toBe('mc::gemm_kernel<w2_residual::Prefill>');
  });

  it('drops numeric template arguments (shapes, windows) and anonymous namespaces', () => {
    expect(shortKernelName(ATTN)).toBe('mc::attention_decode_kernel');
    expect(shortKernelName(EMBED)).toBe('embedding_lookup::kernel');
    expect(shortKernelName('void (anonymous namespace)::zero_unless_rank0_kernel(float*, long)')).toBe('zero_unless_rank0_kernel');
  });
});

describe('parseNcuCsv', () => {
  it('reads quoted fields with commas and doubled quotes', () => {
    expect(parseCsvLine('"a","b, c","say ""hi""",""')).toEqual(['a', 'b, c', 'say "hi"', '']);
  });

  it('converts auto-scaled units and thousands separators to ns and bytes', () => {
    expect(metricValue('1,234.5', 'usecond')).toBeCloseTo(1_234_500);
    expect(metricValue('73.4', 'Mbyte')).toBeCloseTo(73_400_000);
    expect(metricValue('132', '')).toBe(132);
    expect(() => metricValue('1', 'furlong/second')).toThrow(/unit/);
  });

  it('gives one record per profiled kernel, in order, skipping ==PROF== and the program\'s lines', () => {
    const launches = parseNcuCsv(csv(STEP));
    expect(launches.map((k) => k.name)).toEqual(STEP);
    expect(launches[2]).toMatchObject({ id: 2, short: 'mc::attention_decode_kernel', durationNs: 12_000, dramReadBytes: 30_000_000, dramWriteBytes: 4096, grid: 256, block: 256 });
  });
});

describe('findStep', () => {
  it('finds the period of the kernel names, starting at the embedding lookup', () => {
    // the window starts 3 kernels into a step and holds 2.5 steps
    const window = [...STEP, ...STEP, ...STEP].slice(3, 3 + 25);
    const step = findStep(parseNcuCsv(csv(window)));
    expect(step).toEqual({ start: STEP.length - 3, length: STEP.length });
  });

  it('gives up on fewer than two whole steps', () => {
    expect(findStep(parseNcuCsv(csv([...STEP, ...STEP].slice(3, 3 + 15))))).toBeNull();
  });
});

describe('groupByKernel', () => {
  it('sums one step per short name, in the order the kernels first run', () => {
    const groups = groupByKernel(parseNcuCsv(csv(STEP)));
    expect(groups.map((g) => [g.short, g.count])).toEqual([
      ['embedding_lookup::kernel', 1], ['mc::gemv_kernel<rmsnorm_qkv_rope_cache::Decode>', 2], ['mc::attention_decode_kernel', 2],
      ['mc::attention_combine_kernel', 2], ['mc::gemv_kernel<wo_residual::Decode>', 2], ['mc::gemv_kernel<rmsnorm_output::Decode>', 1],
    ]);
    const qkv = groups[1]!;
    expect(qkv.totalNs).toBe(11_000 + 15_000);
    expect(qkv.dramReadBytes).toBe(60_000_000);
    expect(groups[2]!.grids).toEqual([256]);
  });
});
