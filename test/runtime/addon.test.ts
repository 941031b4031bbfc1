import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadNativeAddon, nativeAddonPath } from '../../runtime/native-loader.js';
import type { NativeAddon, NativeModelInstance } from '../../runtime/native.js';
import { buildFakeModel, type FakeCheckpoint, referenceLogits, VOCAB, writeFakeCheckpoint } from './fake-model.js';

let addon: NativeAddon;
let dir: string;
let checkpoint: FakeCheckpoint;
let libraryPath: string;
let slowLibraryPath: string;
let throwingLibraryPath: string;
let createThrowsPath: string;
let ncclThrowsPath: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mc-addon-test-'));
  addon = loadNativeAddon();
  checkpoint = writeFakeCheckpoint(dir);
  [libraryPath, slowLibraryPath, throwingLibraryPath, createThrowsPath, ncclThrowsPath] = await Promise.all([
    buildFakeModel(dir),
    buildFakeModel(dir, ['FAKE_FORWARD_SLEEP_MS=100']),
    buildFakeModel(dir, ['FAKE_THROWS']),
    buildFakeModel(dir, ['FAKE_CREATE_THROWS']),
    buildFakeModel(dir, ['FAKE_NCCL_THROWS']),
  ]);
});

afterAll(() => {
  // The libraries stay loaded (never dlclose'd); unlinking their files is still fine on Linux.
  rmSync(dir, { recursive: true, force: true });
});

/** A model over the shared checkpoint; the model holds the mapping, so the file is closed at once. */
function openModel(path = libraryPath): NativeModelInstance {
  const library = new addon.CompiledLibrary(path);
  const file = new addon.MappedFile(checkpoint.path);
  const model = new addon.ModelInstance(library, file, checkpoint.weights, 0);
  file.close();
  return model;
}

/** Lines of /proc/self/maps that map `path` (use a checkpoint of the test's own): proves munmap happened. */
function mappingsOf(path: string): number {
  return readFileSync('/proc/self/maps', 'utf8').split('\n').filter((line) => line.endsWith(path)).length;
}

describe('the runtime addon', () => {
  it('is loaded from runtime/addon/build/Release and speaks ABI version 3', () => {
    expect(nativeAddonPath()).toMatch(/runtime\/addon\/build\/Release\/mc_runtime\.node$/);
    expect(addon.abiVersion).toBe(3);
  });
});

describe('MappedFile', () => {
  it('maps a file and reports the identity fs.statSync sees', () => {
    const file = new addon.MappedFile(checkpoint.path);
    expect(file.copied).toBe(false);
    const st = statSync(checkpoint.path);
    expect(file.size).toBe(st.size);
    expect(file.identity).toEqual({ dev: st.dev, ino: st.ino, mtimeMs: st.mtimeMs, size: st.size });
    expect(file.path).toBe(checkpoint.path);
    file.close();
  });

  it('copies the first bytes for the header parser, at most the whole file', () => {
    const file = new addon.MappedFile(checkpoint.path);
    expect(file.readHeader(checkpoint.headerBytes.length)).toEqual(checkpoint.headerBytes);
    expect(file.readHeader(1 << 20)).toEqual(readFileSync(checkpoint.path));
    expect(file.readHeader(0).length).toBe(0);
    file.close();
  });

  it('unmaps on close, which is idempotent, and refuses to read afterwards', () => {
    const own = writeFakeCheckpoint(dir);
    const file = new addon.MappedFile(own.path);
    expect(mappingsOf(own.path)).toBe(1);
    file.close();
    file.close();
    expect(file.closed).toBe(true);
    expect(mappingsOf(own.path)).toBe(0);
    expect(() => file.readHeader(8)).toThrow(/is closed/);
  });

  it('refuses a missing file, a directory and an empty file, naming the path', () => {
    const missing = join(dir, 'missing.safetensors');
    expect(() => new addon.MappedFile(missing)).toThrow(`cannot map ${missing}: No such file or directory`);
    const folder = join(dir, 'a-folder');
    mkdirSync(folder);
    expect(() => new addon.MappedFile(folder)).toThrow(`cannot map ${folder}: not a regular file`);
    const empty = join(dir, 'empty.safetensors');
    writeFileSync(empty, '');
    expect(() => new addon.MappedFile(empty)).toThrow(`cannot map ${empty}: the file is empty`);
  });
});

describe('MappedFile.populate (a GPU load reads the checkpoint in steps, with progress)', () => {
  it('reads a range or the whole file into memory off the JS thread (true), at once for a copy', async () => {
    const path = join(dir, 'pages.bin');
    writeFileSync(path, Buffer.alloc(3 * 4096 + 100, 1));
    const file = new addon.MappedFile(path);
    await expect(file.populate(0, file.size)).resolves.toBe(true);
    await expect(file.populate(5000, 3)).resolves.toBe(true);  // unaligned: from its page on
    await expect(file.populate(3 * 4096, 100)).resolves.toBe(true);  // the partial last page
    await expect(file.populate(file.size, 0)).resolves.toBe(true);
    file.close();
    const copy = new addon.MappedFile(checkpoint.path, true);
    await expect(copy.populate(0, copy.size)).resolves.toBe(true);
    copy.close();
  });

  it('refuses a range outside the file, and any call once closed', () => {
    const file = new addon.MappedFile(checkpoint.path);
    expect(() => file.populate(0, file.size + 1)).toThrow(/populate: length/);
    expect(() => file.populate(-1, 1)).toThrow(/populate: offset/);
    expect(() => file.populate(1.5, 1)).toThrow(/must be an integer/);
    file.close();
    expect(() => file.populate(0, 1)).toThrow(/is closed/);
  });

  it('rejects naming the file when it was truncated since it was mapped, where a read would fault', async () => {
    const path = join(dir, 'shrinks.bin');
    writeFileSync(path, Buffer.alloc(64 << 10, 7));
    const file = new addon.MappedFile(path);
    writeFileSync(path, Buffer.alloc(4096, 7));  // O_TRUNC then 4 KiB: the mapping's later pages are gone
    await expect(file.populate(0, file.size)).rejects.toThrow(`${path}: has shrunk from ${64 << 10} to 4096 bytes since it was mapped`);
    file.close();
  });
});

describe('MappedFile with copyToHugePages (loadModel weights: copy)', () => {
  it('reads the file once into a private copy: same bytes, no mapping of the file left', () => {
    const own = writeFakeCheckpoint(dir);
    const file = new addon.MappedFile(own.path, true);
    expect(file.copied).toBe(true);
    expect(mappingsOf(own.path)).toBe(0);  // nothing of the file is mapped: its bytes were read
    expect(file.readHeader(1 << 20)).toEqual(readFileSync(own.path));
    file.close();
  });

  it('runs a model whose weights no later change to the file can reach', () => {
    const own = writeFakeCheckpoint(dir);
    const library = new addon.CompiledLibrary(libraryPath);
    const file = new addon.MappedFile(own.path, true);
    const model = new addon.ModelInstance(library, file, own.weights, 0);
    file.close();
    const before = Array.from(model.forwardSync(new Int32Array([5]), 0, false));
    expect(before).toEqual(referenceLogits([], [5])[0]);
    writeFileSync(own.path, Buffer.alloc(16));  // truncated and rewritten: a mapping would refuse or fault
    expect(Array.from(model.forwardSync(new Int32Array([5]), 0, false))).toEqual(before);
    model.close();
  });

  it('refuses a flag that is not a boolean', () => {
    const make = addon.MappedFile as unknown as new (...args: unknown[]) => unknown;
    expect(() => new make(checkpoint.path, 'yes')).toThrow('MappedFile: copyToHugePages must be a boolean');
  });
});

describe('CompiledLibrary', () => {
  it('reads the specialization, weight names and limits of a library', () => {
    const library = new addon.CompiledLibrary(libraryPath);
    expect(library.path).toBe(libraryPath);
    expect(library.specialization).toBe('fake-model.cpu.f32.tp1 0123abcd');
    expect(library.weightCount).toBe(2);
    expect(library.weightNames).toEqual(['tok_embeddings.weight', 'output.weight']);
    expect([library.maxTokens, library.maxSeqLen, library.vocabLocal]).toEqual([4, 16, VOCAB]);
    expect(library.stateBytes).toBeGreaterThan(16 * 4 * 4);
  });

  it('refuses a library that lacks an ABI symbol, naming the symbol and the file', async () => {
    const path = await buildFakeModel(dir, ['FAKE_OMIT_FORWARD']);
    expect(() => new addon.CompiledLibrary(path)).toThrow(
      `cannot load compiled library ${path}: it does not export mc_forward`,
    );
  });

  it('refuses a library built for another ABI version', async () => {
    const path = await buildFakeModel(dir, ['FAKE_ABI_VERSION=1']);
    expect(() => new addon.CompiledLibrary(path)).toThrow(
      `cannot load compiled library ${path}: it was built for ABI version 1, this runtime speaks 3`,
    );
  });

  it('checkDevice answers false for a library without devices (CPU), and checks its arguments', () => {
    const library = new addon.CompiledLibrary(libraryPath);
    expect(library.checkDevice(0, 0)).toBe(false);
    expect(() => library.checkDevice(-1, 0)).toThrow(/checkDevice: rank/);
    expect(() => library.checkDevice(0, 1.5)).toThrow(/checkDevice: device/);
  });

  it('refuses a missing library file, naming it', () => {
    const path = join(dir, 'missing.so');
    expect(() => new addon.CompiledLibrary(path)).toThrow(`cannot load compiled library ${path}: No such file`);
  });
});

describe('ModelInstance', () => {
  it('resolves the last token\'s logits off the JS thread', async () => {
    const model = openModel();
    const logits = await model.forward(new Int32Array([3, 1, 4]), 0, false);
    expect(logits).toBeInstanceOf(Float32Array);
    expect(Array.from(logits)).toEqual(referenceLogits([], [3, 1, 4])[2]);
    model.close();
  });

  it('returns every token\'s logits with allLogits, also from forwardSync', () => {
    const model = openModel();
    const logits = model.forwardSync(new Int32Array([5, 0]), 0, true);
    expect(logits.length).toBe(2 * VOCAB);
    expect(Array.from(logits)).toEqual(referenceLogits([], [5, 0]).flat());
    model.close();
  });

  it('keeps a KV cache: decoding token by token equals one prefill', async () => {
    const tokens = [2, 7, 1, 6, 3];
    const model = openModel();
    const decoded: number[][] = [];
    for (const [pos, token] of tokens.entries()) {
      decoded.push(Array.from(await model.forward(new Int32Array([token]), pos, false)));
    }
    expect(decoded).toEqual(referenceLogits([], tokens));
    // Rewinding to position 2 replaces the cache from there on.
    expect(Array.from(model.forwardSync(new Int32Array([0]), 2, false))).toEqual(referenceLogits([2, 7], [0])[0]);
    model.close();
  });

  it('rejects with the library\'s message on a bad token and still works afterwards', async () => {
    const model = openModel();
    await model.forward(new Int32Array([1]), 0, false);
    await expect(model.forward(new Int32Array([2, 9]), 1, false)).rejects.toThrow(
      'token 9 at index 1 is out of range [0, 8)',
    );
    expect(() => model.forwardSync(new Int32Array([-1]), 1, false)).toThrow('token -1 at index 0 is out of range');
    const logits = await model.forward(new Int32Array([2]), 1, false);
    expect(Array.from(logits)).toEqual(referenceLogits([1], [2])[0]);
    model.close();
  });

  it('turns an exception that crosses the library\'s C ABI into a message: mc_create, mc_forward (forward, forwardSync), mc_nccl_unique_id, mc_set_comm, mc_destroy (dropped)', async () => {
    // Unguarded, it would reach std::terminate on the model's thread (forward, close) or escape into Node (forwardSync).
    expect(() => openModel(createThrowsPath)).toThrow(`${createThrowsPath}: mc_create threw: fake_model: mc_create throws`);
    const model = openModel(throwingLibraryPath);
    const threw = 'mc_forward threw: fake_model: the last token id throws';
    await expect(model.forward(new Int32Array([VOCAB - 1]), 0, false)).rejects.toThrow(threw);
    expect(() => model.forwardSync(new Int32Array([VOCAB - 1]), 0, false)).toThrow(threw);
    const group = new addon.TpGroup([model], VOCAB, 0);
    await expect(group.forward(new Int32Array([VOCAB - 1]), 0, false)).rejects.toThrow(threw);
    // The model's thread lives on, and the failed calls changed nothing.
    expect(Array.from(await group.forward(new Int32Array([3, 1]), 0, false))).toEqual(referenceLogits([], [3, 1])[1]);
    group.close();  // mc_destroy throws: nothing to report it to, and the process goes on
    expect(group.closed).toBe(true);
    // Two ranks join through mc_nccl_unique_id and mc_set_comm: one line, the library named, for a
    // std::exception and for anything else thrown.
    const ranksOf = (path: string) => [0, 1].map((rank) => {
      const file = new addon.MappedFile(checkpoint.path);
      const rankModel = new addon.ModelInstance(new addon.CompiledLibrary(path), file, checkpoint.weights, rank);
      file.close();
      return rankModel;
    });
    expect(() => new addon.TpGroup(ranksOf(throwingLibraryPath), 2 * VOCAB, 0)).toThrow(`${throwingLibraryPath}: mc_set_comm threw: fake_model: mc_set_comm throws`);
    expect(() => new addon.TpGroup(ranksOf(ncclThrowsPath), 2 * VOCAB, 0)).toThrow(`${ncclThrowsPath}: mc_nccl_unique_id threw a non-standard exception`);
  });

  it('checks the token count and arguments before calling the library', async () => {
    const model = openModel();
    await expect(model.forward(new Int32Array(5), 0, false)).rejects.toThrow('5 tokens; this model takes 1 to 4');
    await expect(model.forward(new Int32Array(0), 0, false)).rejects.toThrow('0 tokens');
    await expect(model.forward([1] as unknown as Int32Array, 0, false)).rejects.toThrow('must be an Int32Array');
    await expect(model.forward(new Int32Array([1]), -1, false)).rejects.toThrow('startPos = -1 is outside');
    model.close();
  });

  it('rejects a second forward while one is in flight', async () => {
    const model = openModel(slowLibraryPath);
    const first = model.forward(new Int32Array([1]), 0, false);
    await expect(model.forward(new Int32Array([2]), 1, false)).rejects.toThrow(
      'model is busy: await the previous call',
    );
    expect(() => model.forwardSync(new Int32Array([2]), 1, false)).toThrow('model is busy');
    expect(Array.from(await first)).toEqual(referenceLogits([], [1])[0]);
    expect(Array.from(await model.forward(new Int32Array([2]), 1, false))).toEqual(referenceLogits([1], [2])[0]);
    model.close();
  });

  it('refuses every call after close, and close is idempotent', async () => {
    const model = openModel();
    model.close();
    model.close();
    expect(model.closed).toBe(true);
    await expect(model.forward(new Int32Array([1]), 0, false)).rejects.toThrow('model is closed');
    expect(() => model.forwardSync(new Int32Array([1]), 0, false)).toThrow('model is closed');
  });

  it('lets a forward in flight finish before close frees the model', async () => {
    // The slow fake aborts the process if mc_destroy runs while its mc_forward sleeps.
    const model = openModel(slowLibraryPath);
    const pending = model.forward(new Int32Array([4, 2]), 0, true);
    model.close();
    expect(Array.from(await pending)).toEqual(referenceLogits([], [4, 2]).flat());
    await expect(model.forward(new Int32Array([1]), 2, false)).rejects.toThrow('model is closed');
  });

  it('keeps the file mapped while a model uses it, even after MappedFile.close', () => {
    const own = writeFakeCheckpoint(dir);
    const library = new addon.CompiledLibrary(libraryPath);
    const file = new addon.MappedFile(own.path);
    const model = new addon.ModelInstance(library, file, own.weights, 0);
    file.close();
    expect(mappingsOf(own.path)).toBe(1);
    expect(Array.from(model.forwardSync(new Int32Array([6]), 0, false))).toEqual(referenceLogits([], [6])[0]);
    model.close();
    expect(mappingsOf(own.path)).toBe(0);
  });

  it('refuses a weight whose rows, columns and stride do not fit its byte range', () => {
    const library = new addon.CompiledLibrary(libraryPath);
    const file = new addon.MappedFile(checkpoint.path);
    const [embedding, output] = checkpoint.weights;
    const sprawling = { ...output, rows: 2, rowStride: 2 ** 28, bytes: 4 };
    expect(() => new addon.ModelInstance(library, file, [embedding, sprawling], 0)).toThrow(
      `weights[1] (output.weight): 2 rows of ${Number(output.cols)} at a stride of ${2 ** 28} do not fit its 4 bytes`,
    );
    const overflowing = { ...output, rows: 2 ** 40, rowStride: 2 ** 40 };
    expect(() => new addon.ModelInstance(library, file, [embedding, overflowing], 0)).toThrow(/do not fit/);
    file.close();
  });

  it('refuses a weight whose bytes lie past the end of the file, naming the weight', () => {
    const library = new addon.CompiledLibrary(libraryPath);
    const file = new addon.MappedFile(checkpoint.path);
    const [embedding, output] = checkpoint.weights;
    const size = file.size;
    const past = { ...output, offset: size - 64 };
    expect(() => new addon.ModelInstance(library, file, [embedding, past], 0)).toThrow(
      `weights[1] (output.weight): bytes [${size - 64}, ${size + 64}) lie outside ${checkpoint.path} (${size} bytes)`,
    );
    // Offsets past 4 GiB travel as numbers or bigints without losing a bit.
    const far = { ...embedding, offset: 2n ** 40n };
    expect(() => new addon.ModelInstance(library, file, [far, output], 0)).toThrow(
      `weights[0] (tok_embeddings.weight): bytes [${2 ** 40}, ${2 ** 40 + 128})`,
    );
    expect(() => new addon.ModelInstance(library, file, [{ ...embedding, offset: 2 ** 33 }, output], 0)).toThrow(
      'weights[0] (tok_embeddings.weight): bytes [8589934592,',
    );
    expect(() => new addon.ModelInstance(library, file, [{ ...embedding, offset: 0.5 }, output], 0)).toThrow(
      'weights[0] (tok_embeddings.weight).offset must be an integer',
    );
    file.close();
  });

  it('refuses the wrong number of weights and passes on mc_create\'s message', () => {
    const library = new addon.CompiledLibrary(libraryPath);
    const file = new addon.MappedFile(checkpoint.path);
    const [embedding, output] = checkpoint.weights;
    expect(() => new addon.ModelInstance(library, file, [embedding], 0)).toThrow('expects 2 weights, got 1');
    expect(() => new addon.ModelInstance(library, file, [embedding, { ...output, rows: 7 }], 0)).toThrow(
      `${libraryPath}: mc_create failed: output.weight: expected [8, 4], got [7, 4]`,
    );
    expect(() => new addon.ModelInstance(library, file, [embedding, output], 1)).toThrow('rank 1: this library was compiled for tp1');
    file.close();
  });

  it('refuses arguments of the wrong class', () => {
    const library = new addon.CompiledLibrary(libraryPath);
    const file = new addon.MappedFile(checkpoint.path);
    const swap = addon.ModelInstance as unknown as new (...args: unknown[]) => unknown;
    expect(() => new swap(file, library, checkpoint.weights, 0)).toThrow('library must be a CompiledLibrary');
    file.close();
    expect(() => new addon.ModelInstance(library, file, checkpoint.weights, 0)).toThrow('is closed');
  });

  it('survives 200 load, forward and close cycles without leaking mappings', () => {
    const own = writeFakeCheckpoint(dir);
    const expected = referenceLogits([], [3])[0];
    for (let i = 0; i < 200; i++) {
      const library = new addon.CompiledLibrary(libraryPath);
      const file = new addon.MappedFile(own.path);
      const model = new addon.ModelInstance(library, file, own.weights, 0);
      expect(Array.from(model.forwardSync(new Int32Array([3]), 0, false))).toEqual(expected);
      model.close();
      file.close();
    }
    expect(mappingsOf(own.path)).toBe(0);
  });
});
