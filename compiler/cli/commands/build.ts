import { buildPlanLibrary } from '../../build/build.js';
import { DEFAULT_ARCHS, parseArchs } from '../../build/nvcc.js';
import { loadModelConfig } from '../../config/load.js';
import { buildPlan } from '../../plan/build-plan.js';
import { DTYPES, TARGETS, TP_SIZES, type TpSize } from '../../plan/types.js';
import { choiceArg, intArg, parseCommand, UsageError } from '../args.js';
import { Progress } from '../progress.js';

export const BUILD_HELP = `usage: mistral-compile build <params.json|model-dir> [--target cpu|cuda] [options]

Renders the model's kernels with its shapes baked in and compiles them into one shared library
(cached by the hash of the sources and flags: an unchanged model rebuilds in well under a second).

options:
  --target T        cpu (default) or cuda
  --arch A,B        GPU architectures of a cuda build (default ${DEFAULT_ARCHS.join(',')}), e.g. sm_90a for H100/H200 only
  --tp N            tensor-parallel ranks (default 1)
  --dtype D         weight dtype the library reads: bf16 (default), f16, f32
  --max-seq-len N   context to size the KV cache for (default: params.json's, else 32768)
  --max-tokens N    prefill chunk, most tokens per call (default 512)
  --out DIR         also write the sources and the library to DIR
  --cache DIR       build cache (default $MISTRAL_COMPILE_CACHE, else $XDG_CACHE_HOME/mistral-compile or ~/.cache/mistral-compile)
  --json            print the result as JSON, no progress
  --verbose         stack traces and a compiler's full output on errors`;

export async function buildCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommand('build', argv, {
    target: { type: 'string' }, tp: { type: 'string' }, dtype: { type: 'string' }, 'max-seq-len': { type: 'string' },
    'max-tokens': { type: 'string' }, arch: { type: 'string' }, out: { type: 'string' }, cache: { type: 'string' }, json: { type: 'boolean' },
  });
  if (values.help) return console.log(BUILD_HELP), 0;
  if (positionals.length !== 1) throw new UsageError('mistral-compile build', undefined, `expects one config path (got ${positionals.length})`, 'pass a params.json or a model directory');
  const progress = new Progress(Boolean(values.json));
  const maxSeqLen = values['max-seq-len'] === undefined ? undefined : intArg('--max-seq-len', values['max-seq-len'] as string, 0, 1, 1 << 24);
  const model = loadModelConfig(positionals[0]!, { maxSeqLen });
  progress.notes(model.notes);
  const plan = buildPlan(model, {
    target: choiceArg('--target', values.target as string | undefined, TARGETS, 'cpu'),
    dtype: choiceArg('--dtype', values.dtype as string | undefined, DTYPES, 'bf16'),
    tp: Number(choiceArg('--tp', values.tp as string | undefined, TP_SIZES.map(String), '1')) as TpSize,
    maxTokens: intArg('--max-tokens', values['max-tokens'] as string | undefined, 512, 1, 65536),
  });
  const archs = values.arch === undefined ? undefined : parseArchs(values.arch as string);
  const result = await buildPlanLibrary(plan, {
    outDir: values.out as string | undefined, cacheDir: values.cache as string | undefined, onProgress: progress.onLoad, archs,
  });
  if (values.json) console.log(JSON.stringify({ key: result.key, hash: result.hash, library: result.library, sources: result.sourceDir, cached: result.cached, out: values.out ?? null, notes: model.notes }));
  else console.log(result.library);
  return 0;
}
