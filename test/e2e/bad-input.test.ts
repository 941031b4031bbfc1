/**
 * Bad input never crashes the process: broken checkpoints, params.json that does not match the
 * weights, bad token ids and misuse of a model each end in one clear line that names the file,
 * tensor or argument at fault. Also: concurrent calls are serialized, and loading is repeatable.
 */
import { cp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel, type LoadedModel } from '../../runtime/model.js';
import {
  collect, createWorkspace, DENSE_GQA, errorMessage, expectRowsWithin, referenceFor, tokensFor, TOLERANCE, writeModelDir,
  type ModelDir, type Workspace,
} from './helpers.js';
import { editHeader, editTensors, misalignDataSection, truncateTo } from './hostile-checkpoints.js';

const DENSE = { ...DENSE_GQA, max_seq_len: 24 };

let ws: Workspace;
/** A valid f32 model; each broken checkpoint starts as a copy of it. */
let good: ModelDir;

beforeAll(async () => {
  ws = await createWorkspace('bad-input');
  good = await writeModelDir(ws.root, 'good', { params: DENSE }, { seed: 800, dtype: 'f32' });
});
afterAll(async () => {
  await ws?.remove();
});

let copies = 0;
/** A copy of the good model directory: { dir, weights: its consolidated.safetensors, params: its params.json }. */
async function copyOfGood(): Promise<{ dir: string; weights: string; params: string }> {
  const dir = join(ws.root, `copy-${copies++}`);
  await cp(good.dir, dir, { recursive: true });
  return { dir, weights: join(dir, 'consolidated.safetensors'), params: join(dir, 'params.json') };
}

/** The one-line error of loading `dir`; the load must fail. */
function loadError(dir: string): Promise<string> {
  return errorMessage(async () => (await loadModel(dir, { cacheDir: ws.cacheDir })).close());
}

describe('a checkpoint that does not fit the model is refused, naming the file and the tensor', () => {
  it('a missing tensor', async () => {
    const copy = await copyOfGood();
    await editTensors(copy.weights, (ts) => ts.filter((t) => t.name !== 'layers.1.attention.wk.weight'));
    const message = await loadError(copy.dir);
    expect(message).toContain(copy.weights);
    expect(message).toContain('tensor "layers.1.attention.wk.weight": is missing');
  });

  it('an extra tensor', async () => {
    const copy = await copyOfGood();
    await editTensors(copy.weights, (ts) => [...ts, { name: 'layers.2.attention_norm.weight', dtype: 'F32', shape: [64], values: new Float32Array(64).fill(1) }]);
    const message = await loadError(copy.dir);
    expect(message).toContain(copy.weights);
    expect(message).toContain('tensor "layers.2.attention_norm.weight": is not part of the model');
  });

  it('a tensor of the wrong shape', async () => {
    const copy = await copyOfGood();
    await editTensors(copy.weights, (ts) => ts.map((t) => (t.name === 'norm.weight' ? { ...t, shape: [65], values: new Float32Array(65).fill(1) } : t)));
    const message = await loadError(copy.dir);
    expect(message).toContain(copy.weights);
    expect(message).toMatch(/tensor "norm\.weight": has shape \[65\] but .*params\.json implies \[64\]/);
  });

  it('mixed dtypes (one bf16 tensor among f32 ones)', async () => {
    const copy = await copyOfGood();
    await editTensors(copy.weights, (ts) => ts.map((t) => (t.name === 'layers.0.ffn_norm.weight' ? { ...t, dtype: 'BF16' } : t)));
    const message = await loadError(copy.dir);
    expect(message).toContain(copy.weights);
    expect(message).toContain('tensor "layers.0.ffn_norm.weight": is BF16 but "tok_embeddings.weight" is F32');
    expect(message).toContain('mixed dtypes');
  });

  it('a params.json whose hidden_dim differs from the weights\'', async () => {
    const copy = await copyOfGood();
    await writeFile(copy.params, JSON.stringify({ ...JSON.parse(await readFile(copy.params, 'utf8')), hidden_dim: 96 }));
    const message = await loadError(copy.dir);
    expect(message).toContain(copy.weights);
    expect(message).toMatch(/tensor "layers\.0\.feed_forward\.w1\.weight": has shape \[128, 64\] but .*copy-\d+\/params\.json implies \[96, 64\]/);
  });

  it('a params.json with more layers than the weights', async () => {
    const copy = await copyOfGood();
    await writeFile(copy.params, JSON.stringify({ ...JSON.parse(await readFile(copy.params, 'utf8')), n_layers: 3 }));
    expect(await loadError(copy.dir)).toContain('tensor "layers.2.attention_norm.weight": is missing');
  });

  it('a params.json of a MoE model over dense weights', async () => {
    const copy = await copyOfGood();
    await writeFile(copy.params, JSON.stringify({ ...JSON.parse(await readFile(copy.params, 'utf8')), moe: { num_experts: 4, num_experts_per_tok: 2 } }));
    expect(await loadError(copy.dir)).toContain('tensor "layers.0.feed_forward.gate.weight": is missing');
  });
});

describe('a damaged safetensors file is refused, naming the file and what is wrong', () => {
  it('truncated inside the data section', async () => {
    const copy = await copyOfGood();
    const header = await readFile(copy.weights);
    await truncateTo(copy.weights, header.byteLength - 100);
    const message = await loadError(copy.dir);
    expect(message).toContain(copy.weights);
    expect(message).toMatch(/tensor "output\.weight": data_offsets \[\d+, \d+\] run past the end of the data section/);
  });

  it('truncated inside the header', async () => {
    const copy = await copyOfGood();
    await truncateTo(copy.weights, 100);
    const message = await loadError(copy.dir);
    expect(message).toContain(copy.weights);
    expect(message).toMatch(/header length: declares a \d+-byte header but only 92 bytes follow/);
  });

  it('shorter than the 8-byte header length', async () => {
    const copy = await copyOfGood();
    await truncateTo(copy.weights, 5);
    expect(await loadError(copy.dir)).toContain(`${copy.weights}: is 5 bytes`);
  });

  it('a header whose data_offsets point past the end of the file', async () => {
    const copy = await copyOfGood();
    await editHeader(copy.weights, (h) => {
      const t = h['norm.weight'] as { data_offsets: [number, number] };
      t.data_offsets = [t.data_offsets[0] + 1_000_000, t.data_offsets[1] + 1_000_000];
    });
    const message = await loadError(copy.dir);
    expect(message).toContain(copy.weights);
    expect(message).toMatch(/tensor "norm\.weight": data_offsets \[\d+, \d+\] run past the end of the data section/);
  });

  it('a header whose data_offsets make two tensors share bytes', async () => {
    const copy = await copyOfGood();
    await editHeader(copy.weights, (h) => {
      const t = h['norm.weight'] as { data_offsets: [number, number] };
      t.data_offsets = [t.data_offsets[0] - 4, t.data_offsets[1] - 4];
    });
    const message = await loadError(copy.dir);
    expect(message).toContain(copy.weights);
    expect(message).toContain('overlap');
  });

  it('a header that is not JSON', async () => {
    const copy = await copyOfGood();
    const bytes = await readFile(copy.weights);
    bytes.write('{{{{', 8, 'utf8'); // same length, so only the JSON is wrong
    await writeFile(copy.weights, bytes);
    const message = await loadError(copy.dir);
    expect(message).toContain(copy.weights);
    expect(message).toContain('header: is not valid JSON');
  });

  it('no consolidated.safetensors at all', async () => {
    const copy = await copyOfGood();
    await rm(copy.weights);
    const message = await loadError(copy.dir);
    expect(message).toContain(copy.weights);
    expect(message).toContain('no such file');
  });
});

describe('an unusual but valid safetensors file is read correctly', () => {
  it('a data section that starts at an odd file offset (header length ≡ 3 mod 8)', async () => {
    const copy = await copyOfGood();
    await misalignDataSection(copy.weights, 3);
    const tokens = tokensFor(good, 12, 805);
    const model = await loadModel(copy.dir, { cacheDir: ws.cacheDir });
    try {
      expectRowsWithin(await model.logits(tokens), await referenceFor(good, tokens), TOLERANCE.f32);
    } finally {
      model.close();
    }
  });
});

describe('bad calls into a loaded model are refused, naming the argument', () => {
  let model: LoadedModel;
  beforeAll(async () => {
    model = await loadModel(good.dir, { cacheDir: ws.cacheDir });
  });
  afterAll(() => {
    model?.close();
  });

  const BAD_TOKENS: Array<[string, number]> = [['vocab_size (512)', 512], ['-1', -1], ['1.5', 1.5], ['NaN', NaN]];
  BAD_TOKENS.forEach(([what, bad]) => {
    it(`a token id of ${what}`, async () => {
      const message = await errorMessage(() => model.logits([1, 2, bad, 3]));
      expect(message).toContain(`tokens: [2]: token id ${String(bad)}`);
      expect(message).toContain('integers from 0 to 511 (vocab_size 512)');
    });
  });

  it('a token id that is not a number', async () => {
    const message = await errorMessage(() => model.logits([1, '2' as unknown as number]));
    expect(message).toContain('tokens: [1]: token id 2');
  });

  it('an empty prompt', async () => {
    expect(await errorMessage(() => model.logits([]))).toMatch(/^tokens: is empty;/);
  });

  it('more tokens than the context holds (max_seq_len 24)', async () => {
    const message = await errorMessage(() => model.logits(tokensFor(good, 25, 810)));
    expect(message).toMatch(/^tokens: 25 positions exceed the context of 24 \(max_seq_len\)/);
  });

  it('continuing a sequence past the end of the context', async () => {
    await model.forward(tokensFor(good, 20, 811), 0, false);
    const message = await errorMessage(() => model.forward(tokensFor(good, 5, 812), 20, false));
    expect(message).toContain('25 positions exceed the context of 24');
  });

  it('and the model answers correctly after every refusal', async () => {
    const tokens = tokensFor(good, 24, 813);
    const before = await model.logits(tokens);
    await errorMessage(() => model.logits([1, 512]));
    await errorMessage(() => model.logits(tokensFor(good, 25, 814)));
    expect(await model.logits(tokens)).toEqual(before);
  });
});

describe('a closed model', () => {
  it('refuses logits(), forward() and generate() with "is closed"', async () => {
    const model = await loadModel(good.dir, { cacheDir: ws.cacheDir });
    model.close();
    expect(await errorMessage(() => model.logits([1, 2]))).toMatch(/^model: is closed; load it again/);
    expect(await errorMessage(() => model.forward([1, 2], 0))).toMatch(/^model: is closed/);
    expect(await errorMessage(() => collect(model.generate([1, 2], { maxTokens: 2 })))).toMatch(/^model: is closed/);
  });

  it('can be closed twice', async () => {
    const model = await loadModel(good.dir, { cacheDir: ws.cacheDir });
    model.close();
    expect(() => model.close()).not.toThrow();
  });

  it('settles calls pending at close(): each resolves with correct logits or rejects with "is closed"', async () => {
    const model = await loadModel(good.dir, { cacheDir: ws.cacheDir });
    const tokens = tokensFor(good, 16, 815);
    const expected = await model.logits(tokens);
    const pending = [model.logits(tokens), model.logits(tokens)];
    await new Promise((r) => setImmediate(r)); // the first call may be running natively by now
    model.close();
    for (const settled of await Promise.allSettled(pending)) {
      if (settled.status === 'fulfilled') expect(settled.value).toEqual(expected);
      else expect(String(settled.reason)).toContain('model: is closed');
    }
  });
});

describe('concurrent calls on one model', () => {
  let model: LoadedModel;
  beforeAll(async () => {
    model = await loadModel(good.dir, { cacheDir: ws.cacheDir });
  });
  afterAll(() => {
    model?.close();
  });

  it('two logits() calls at once both resolve, each equal to the same call made alone', async () => {
    const a = tokensFor(good, 20, 820);
    const b = tokensFor(good, 13, 821);
    const [together1, together2] = await Promise.all([model.logits(a), model.logits(b)]);
    const alone1 = await model.logits(a);
    const alone2 = await model.logits(b);
    expect(together1).toEqual(alone1);
    expect(together2).toEqual(alone2);
  });

  it('run in the order they were made: a forward() that continues an earlier one sees its tokens', async () => {
    const tokens = tokensFor(good, 12, 822);
    const [first, second] = await Promise.all([model.forward(tokens.slice(0, 7), 0), model.forward(tokens.slice(7), 7)]);
    expect([...first, ...second]).toEqual(await model.logits(tokens));
  });

  it('a refused call does not disturb the calls queued behind it', async () => {
    const tokens = tokensFor(good, 10, 823);
    const [refused, ok] = await Promise.allSettled([model.logits([-1]), model.logits(tokens)]);
    expect(refused.status).toBe('rejected');
    expect(ok.status === 'fulfilled' ? ok.value : null).toEqual(await model.logits(tokens));
  });

  it('a logits() call between two steps of a generation does not change the generated tokens', async () => {
    const prompt = tokensFor(good, 5, 824);
    const undisturbed = await collect(model.generate(prompt, { maxTokens: 8 }));
    const generation = model.generate(prompt, { maxTokens: 8 });
    const disturbed: number[] = [];
    for await (const token of generation) {
      disturbed.push(token);
      // Another sequence as long as the generation's own: the worst case, where nothing else notices.
      if (disturbed.length === 3) await model.logits(tokensFor(good, prompt.length + 2, 825));
    }
    expect(disturbed).toEqual(undisturbed);
  });
});

describe('loading repeatedly', () => {
  it('50 load/close cycles of one model each give the same logits', async () => {
    const tokens = tokensFor(good, 8, 830);
    let first: Float32Array[] | undefined;
    for (let cycle = 0; cycle < 50; cycle++) {
      const model = await loadModel(good.dir, { cacheDir: ws.cacheDir });
      const logits = await model.logits(tokens);
      model.close();
      first ??= logits;
      expect(logits, `cycle ${cycle}`).toEqual(first);
    }
  });

  it('close() unmaps the weights at once, without waiting for garbage collection', async () => {
    const copy = await copyOfGood(); // a file no other model of this test file maps
    const mappings = async () => (await readFile('/proc/self/maps', 'utf8')).split('\n').filter((line) => line.endsWith(copy.weights)).length;
    const model = await loadModel(copy.dir, { cacheDir: ws.cacheDir });
    await model.logits([1, 2, 3]);
    expect(await mappings()).toBe(1);
    model.close();
    expect(await mappings()).toBe(0);
  });
});
