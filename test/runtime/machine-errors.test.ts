/** A model that cannot be created on this machine fails with one line that says what is missing and what to do. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { packageRoot } from '../../compiler/paths.js';
import { MachineError } from '../../runtime/errors.js';
import { withMachineErrors } from '../../runtime/model.js';

const lib = '/cache/m.cuda.bf16.tp1/0123/libm.so';
const failing = (message: string) => () => { throw new Error(`${lib}: mc_create failed: ${message}`); };

describe('withMachineErrors', () => {
  it('names a missing GPU or driver and offers the CPU backend', () => {
    const create = () => withMachineErrors('cuda', failing('no CUDA device: cudaGetDeviceCount returned 35 (CUDA driver missing or too old)'));
    expect(create).toThrow(MachineError);
    expect(create).toThrow('--target cuda: no CUDA device: cudaGetDeviceCount returned 35 (CUDA driver missing or too old); ' +
      'run where an NVIDIA GPU and its driver are visible (nvidia-smi lists it), or use --target cpu');
  });

  it('keeps the library\'s own fix where it gives one (device memory, a rank\'s GPU, the architecture)', () => {
    const oom = 'out of device memory: the model needs 90.00 GiB (weights 87.00, KV cache 2.00, activations 1.00) but NVIDIA H100 80GB HBM3 has 78.50 GiB free of 79.10 GiB';
    const fix = 'rebuild with a smaller --max-seq-len or --max-tokens, or use more --tp ranks';
    expect(() => withMachineErrors('cuda', failing(`${oom}; ${fix}`))).toThrow(`--target cuda: ${oom}; ${fix}`);
    expect(() => withMachineErrors('cuda', failing('no CUDA device 1 for rank 1: 1 device(s) visible; check CUDA_VISIBLE_DEVICES (and LOCAL_RANK)')))
      .toThrow('--target cuda: no CUDA device 1 for rank 1: 1 device(s) visible; check CUDA_VISIBLE_DEVICES (and LOCAL_RANK)');
    expect(() => withMachineErrors('cuda', failing('this library has no code for NVIDIA A10 (compute capability 8.6): it was built for compute capabilities 8.0 9.0a; rebuild with --arch sm_86')))
      .toThrow(MachineError);
    expect(() => withMachineErrors('cpu', failing('out of memory allocating the KV cache and activations; use a smaller --max-seq-len')))
      .toThrow('--target cpu: out of memory allocating the KV cache and activations; use a smaller --max-seq-len');
  });

  it('keeps the library\'s full message for --verbose', () => {
    let caught: unknown;
    try {
      withMachineErrors('cuda', failing('out of host memory'));
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(MachineError);
    expect((caught as MachineError).details).toBe(`${lib}: mc_create failed: out of host memory`);
    expect((caught as MachineError).message).toBe('--target cuda: out of host memory; free some memory, or rebuild with a smaller --max-seq-len');
  });

  it('classifies the CUDA runtime\'s own machine errors (cuda_error\'s wording), with a fix for each', () => {
    const cudaError = (what: string, name: string, code: number, text: string) => `CUDA error in ${what}: ${text} (${name}, code ${code})`;
    const cases: Array<[string, RegExp]> = [
      [cudaError('cudaMallocHost', 'cudaErrorMemoryAllocation', 2, 'out of memory'), /; free some memory/],
      [cudaError('cudaSetDevice', 'cudaErrorDevicesUnavailable', 46, 'CUDA-capable device(s) is/are busy or unavailable'), /; the GPU is busy or in exclusive-process mode/],
      [cudaError('setting kernel shared-memory limits', 'cudaErrorNoKernelImageForDevice', 209, 'no kernel image is available for execution on the device'), /; rebuild with --arch for this GPU/],
    ];
    for (const [message, fix] of cases) {
      const create = () => withMachineErrors('cuda', failing(message));
      expect(create).toThrow(MachineError);
      expect(create).toThrow(fix);
    }
    // mc_check_device's failures read as mc_create's.
    expect(() => withMachineErrors('cuda', () => { throw new Error(`${lib}: mc_check_device failed: no CUDA device: cudaGetDeviceCount returned 100 (no CUDA-capable device is visible)`); }))
      .toThrow('--target cuda: no CUDA device: cudaGetDeviceCount returned 100 (no CUDA-capable device is visible); run where');
    // Other CUDA errors are bugs (e.g. an illegal address), not the machine's.
    const bug = new Error(`${lib}: mc_create failed: ${cudaError('the first forward', 'cudaErrorIllegalAddress', 700, 'an illegal memory access was encountered')}`);
    expect(() => withMachineErrors('cuda', () => { throw bug; })).toThrow(bug);
  });

  it('recognizes every machine failure the libraries can report, by their templates\' own wording', () => {
    // Each message format of check_device / device_alloc / the CPU library's allocations, as written in the templates.
    const formats = [...readFileSync(join(packageRoot(), 'templates', 'cuda', 'model.cu.hbs'), 'utf8').matchAll(/"((?:no CUDA device|this library has no code for|out of (?:device |host )?memory)[^"]*)"/g),
      ...readFileSync(join(packageRoot(), 'templates', 'cpu', 'model.cpp.hbs'), 'utf8').matchAll(/"(out of (?:host )?memory[^"]*)"/g)].map((m) => m[1]!);
    expect(formats.length).toBeGreaterThanOrEqual(5);
    for (const format of formats) {
      const message = format.replace(/%(\.2f|lld|d|s)/g, '1');
      expect(() => withMachineErrors('cuda', failing(message)), format).toThrow(MachineError);
    }
  });

  it('lets every other failure through unchanged (a bug, reported as one)', () => {
    const bug = new Error(`${lib}: mc_create failed: weight output.weight: expected a [8, 4] slice, got [7, 4]`);
    expect(() => withMachineErrors('cuda', () => { throw bug; })).toThrow(bug);
    expect(withMachineErrors('cpu', () => 42)).toBe(42);
  });
});
