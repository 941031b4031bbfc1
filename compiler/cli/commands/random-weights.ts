import { loadModelConfig } from '../../config/load.js';
import { writeRandomWeights } from '../../weights/random.js';
import { choiceArg, intArg, parseCommand, UsageError } from '../args.js';
import { formatBytes } from '../format.js';
import { Progress } from '../progress.js';

export const RANDOM_WEIGHTS_HELP = `usage: mistral-compile random-weights <params.json|model-dir> --out DIR [options]

Writes DIR/params.json and DIR/consolidated.safetensors with seeded random weights in Mistral's
official tensor names and shapes (for tests, demos and benchmarks without downloads). The same
seed gives byte-identical files. An existing checkpoint in DIR is replaced only if this command
wrote it.

options:
  --out DIR         the model directory to write (created if missing)
  --seed S          0 to 4294967295 (default 0)
  --dtype D         bf16 (default, as official checkpoints), f16, f32
  --max-seq-len N   the context written into params.json (default: the config's)
  --json            print the paths and bytes as JSON, no progress
  --verbose         stack traces on errors`;

export async function randomWeightsCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommand('random-weights', argv, {
    out: { type: 'string' }, seed: { type: 'string' }, dtype: { type: 'string' }, 'max-seq-len': { type: 'string' }, json: { type: 'boolean' },
  });
  if (values.help) return console.log(RANDOM_WEIGHTS_HELP), 0;
  if (positionals.length !== 1) throw new UsageError('mistral-compile random-weights', undefined, `expects one config path (got ${positionals.length})`, 'pass a params.json or a model directory');
  if (typeof values.out !== 'string') throw new UsageError('--out', undefined, 'is required', 'pass the directory to write, e.g. --out /tmp/tiny-moe');
  const maxSeqLen = values['max-seq-len'] === undefined ? undefined : intArg('--max-seq-len', values['max-seq-len'] as string, 0, 1, 1 << 24);
  const model = loadModelConfig(positionals[0]!, { maxSeqLen });
  const progress = new Progress(Boolean(values.json));
  progress.notes(model.notes);
  const started = performance.now();
  const result = await writeRandomWeights(model, values.out, {
    seed: intArg('--seed', values.seed as string | undefined, 0, 0, 2 ** 32 - 1),
    dtype: choiceArg('--dtype', values.dtype as string | undefined, ['f32', 'bf16', 'f16'] as const, 'bf16'),
    onProgress: (written, total) => progress.update(`writing ${formatBytes(total)} of random weights`, total === 0 ? 1 : written / total),
  });
  progress.clear();
  if (values.json) console.log(JSON.stringify({ params: result.paramsPath, weights: result.safetensorsPath, bytes: result.bytes, notes: model.notes }));
  else progress.line(`wrote ${formatBytes(result.bytes)} in ${((performance.now() - started) / 1000).toFixed(1)} s: ${result.safetensorsPath}`);
  return 0;
}
