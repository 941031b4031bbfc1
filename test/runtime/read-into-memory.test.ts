/** How a GPU load reads its checkpoint into memory before the copy to the device: in steps, each reported. */
import { describe, expect, it } from 'vitest';
import { readIntoMemory, type LoadProgress } from '../../runtime/model.js';

/** A stand-in for the addon's MappedFile: records the ranges asked for, answers as told. */
function fakeFile(size: number, answer: (offset: number) => Promise<boolean>) {
  const ranges: Array<[number, number]> = [];
  return { ranges, file: { size, copied: false, populate: (offset: number, length: number) => (ranges.push([offset, length]), answer(offset)) } };
}

describe('readIntoMemory', () => {
  it('covers the file in steps, the last one short, reporting the fraction done after each', async () => {
    const { ranges, file } = fakeFile(1000, async () => true);
    const events: LoadProgress[] = [];
    await readIntoMemory(file, '/m/consolidated.safetensors', (e) => events.push(e), 1 << 30, 300);
    expect(ranges).toEqual([[0, 300], [300, 300], [600, 300], [900, 100]]);
    expect(events.map((e) => (e.stage === 'read' ? e.fraction : NaN))).toEqual([0.3, 0.6, 0.9, 1]);
    expect(events[0]).toEqual({ stage: 'read', path: '/m/consolidated.safetensors', bytes: 1000, fraction: 0.3 });
  });

  it('stops quietly after the first step where the kernel cannot do it (the copy then reads the file itself)', async () => {
    const { ranges, file } = fakeFile(1000, async () => false);
    const events: LoadProgress[] = [];
    await readIntoMemory(file, '/m/consolidated.safetensors', (e) => events.push(e), 1 << 30, 300);
    expect(ranges).toHaveLength(1);
    expect(events).toEqual([]);
  });

  it('turns a failed read into one line naming the file and the fix', async () => {
    const { file } = fakeFile(1000, async (offset) => {
      // The addon's wording (runtime/addon/src/mapped_file.cpp, changedSinceMapped): it ends in its fix.
      if (offset >= 600) throw new Error('/m/consolidated.safetensors: has shrunk from 1000 to 512 bytes since it was mapped; load it again once it is no longer being written');
      return true;
    });
    const failure = await readIntoMemory(file, '/m/consolidated.safetensors', undefined, 1 << 30, 300).catch((e: Error) => e);
    expect(String(failure)).toMatch(/^\S*Error: \/m\/consolidated\.safetensors: cannot be read into memory: has shrunk from 1000 to 512 bytes since it was mapped; load it again once it is no longer being written$/);
  });

  it('leaves a file larger than the memory available to its readers (reading it would evict its own first pages)', async () => {
    const { ranges, file } = fakeFile(1000, async () => true);
    const events: LoadProgress[] = [];
    await readIntoMemory(file, '/m/x', (e) => events.push(e), 999, 300);
    expect(ranges).toEqual([]);
    expect(events).toEqual([]);
    await readIntoMemory(file, '/m/x', (e) => events.push(e), 1000, 300);
    expect(ranges).toHaveLength(4);
  });

  it('keeps the addon\'s own fix (an I/O error is not a file being written)', async () => {
    const { file } = fakeFile(1000, async () => {
      throw new Error('/m/x: bytes 0..300 could not be read (Bad address: an I/O error, or a truncation not visible here yet, e.g. on NFS); check the disk or file system, then load it again');
    });
    await expect(readIntoMemory(file, '/m/x', undefined, 1 << 30, 300)).rejects.toThrow(
      /^\/m\/x: cannot be read into memory: bytes 0\.\.300 could not be read \(Bad address: an I\/O error, or a truncation not visible here yet, e\.g\. on NFS\); check the disk or file system, then load it again$/);
  });

  it('skips a private copy (weights: copy): it is in memory already', async () => {
    const { ranges, file } = fakeFile(1000, async () => true);
    const events: LoadProgress[] = [];
    await readIntoMemory({ ...file, copied: true }, '/m/x', (e) => events.push(e), 1 << 30, 300);
    expect(ranges).toEqual([]);
    expect(events).toEqual([]);
  });

  it('reads a file of one step without progress events (it takes well under a second)', async () => {
    const { ranges, file } = fakeFile(300, async () => true);
    const events: LoadProgress[] = [];
    await readIntoMemory(file, '/m/x', (e) => events.push(e), 1 << 30, 300);
    expect(ranges).toEqual([[0, 300]]);
    expect(events).toEqual([]);
  });

  it('does nothing for an empty file', async () => {
    const { ranges, file } = fakeFile(0, async () => true);
    await readIntoMemory(file, '/m/x', undefined, 1 << 30, 300);
    expect(ranges).toEqual([]);
  });
});
