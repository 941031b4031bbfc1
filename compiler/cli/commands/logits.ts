import { accessSync, constants, readdirSync, statSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { loadModel } from '../../../runtime/model.js';
import { BuildError } from '../../build/errors.js';
import { parseCommand, UsageError } from '../args.js';
import { isRankZero, Progress, rankPrefix } from '../progress.js';
import { parseTokenList } from '../tokens.js';
import { checkPromptFits, loadOptions, MODEL_OPTIONS, MODEL_OPTIONS_HELP, modelDir } from './model-options.js';

export const LOGITS_HELP = `usage: mistral-compile logits --model DIR --tokens 1,2,3 --out FILE [options]

Compiles the model if needed, runs the tokens as one sequence and writes the logits of every
position to FILE as float32 little-endian, shape [n_tokens, vocab_size].

options:
  --out FILE        where to write the logits (required)
${MODEL_OPTIONS_HELP}`;

export async function logitsCommand(argv: string[]): Promise<number> {
  const { values } = parseCommand('logits', argv, { ...MODEL_OPTIONS, out: { type: 'string' } });
  if (values.help) return console.log(LOGITS_HELP), 0;
  if (typeof values.out !== 'string') throw new UsageError('--out', undefined, 'is required', 'pass the file to write the logits to');
  const tokens = parseTokenList(values.tokens as string | undefined);
  const dir = modelDir(values);
  const options = loadOptions(values);
  checkPromptFits(dir, options, tokens.length);
  // One process per rank: only rank 0 writes (its machine's path is the one to check).
  if (isRankZero()) checkOut(values.out, dir);
  const progress = new Progress(Boolean(values.json), rankPrefix());
  const model = await loadModel(dir, { ...options, onProgress: progress.onLoad });
  try {
    const started = performance.now();
    const rows = await model.logits(tokens);
    const seconds = (performance.now() - started) / 1000;
    const vocab = model.config.vocab_size;
    // One process per rank: every rank holds the same full logits; rank 0 alone writes and reports.
    if (model.distributed !== undefined && model.distributed.rank !== 0) return 0;
    const out = new Float32Array(rows.length * vocab);
    rows.forEach((row, i) => out.set(row, i * vocab));
    try {
      // Float32Array is little-endian on every platform Node runs on here (x86-64, arm64).
      await writeFile(values.out, new Uint8Array(out.buffer));
    } catch (err) {
      throw new BuildError(values.out, undefined, `cannot write the logits (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, 'choose a writable --out path');
    }
    if (values.json) console.log(JSON.stringify({ out: values.out, shape: [rows.length, vocab], dtype: 'float32', seconds, notes: model.config.notes }));
    else progress.line(`wrote logits [${rows.length}, ${vocab}] float32 to ${values.out} (${(rows.length / seconds).toFixed(1)} tokens/s)`);
  } finally {
    model.close();
  }
  return 0;
}

/**
 * Before anything is compiled or run: --out must be a file this process can write, and not one of
 * the model's own (a logits file written over consolidated.safetensors destroyed the checkpoint).
 */
function checkOut(out: string, dir: string): void {
  let target: ReturnType<typeof statSync> | undefined;
  try {
    target = statSync(out);
  } catch {
    target = undefined;  // a new file: its directory must be writable
  }
  if (target !== undefined) {
    if (target.isDirectory()) throw new UsageError('--out', undefined, `${out} is a directory`, 'pass a file path for the logits, e.g. DIR/logits.f32');
    let names: string[] = [];
    try {
      names = readdirSync(dir);
    } catch {
      // unreadable: loading the model names it
    }
    for (const name of names.filter((n) => n === 'params.json' || n.endsWith('.safetensors'))) {
      try {
        const own = statSync(join(dir, name));
        if (own.ino === target.ino && own.dev === target.dev) {
          throw new UsageError('--out', undefined, `${out} is the model's own ${name}, which the logits would overwrite`, 'pass another file for the logits');
        }
      } catch (err) {
        if (err instanceof UsageError) throw err;
      }
    }
  }
  const writable = target !== undefined ? out : dirname(resolve(out));
  try {
    accessSync(writable, constants.W_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new UsageError('--out', undefined, target !== undefined ? `${out} cannot be written (${code})` : `${out} cannot be created: its directory ${writable} ${code === 'ENOENT' ? 'does not exist' : `is not writable (${code})`}`,
      'pass a file path in a directory you can write to');
  }
}
