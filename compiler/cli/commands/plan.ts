import { loadDeviceProfile } from '../../config/devices.js';
import { loadModelConfig } from '../../config/load.js';
import { buildPlan } from '../../plan/build-plan.js';
import { DTYPES, TARGETS, TP_SIZES, type TpSize } from '../../plan/types.js';
import { choiceArg, intArg, parseCommand, UsageError } from '../args.js';
import { planReport } from '../plan-report.js';

export const PLAN_HELP = `usage: mistral-compile plan <params.json|model-dir> [options]

Validates the config and prints the fusion and sharding plan: the kernels and what each fuses,
parameters, memory per rank, KV cache (with the rolling-window saving) and the decode ceiling.

options:
  --tp N            tensor-parallel ranks: 1, 2, 4 or 8 (default 1)
  --target T        cpu or cuda (default cpu)
  --dtype D         weight dtype: bf16, f16 or f32 (default bf16)
  --device ID       device profile for the roofline: h100, h200, a100, cpu (default: by target)
  --max-seq-len N   context to size the KV cache for (default: params.json's, else 32768)
  --context N       context at which to cost a decoded token (default 4096, or max_seq_len when smaller)
  --max-tokens N    prefill chunk size, sizes activation buffers (default 512)
  --json            print the plan itself as JSON
  --verbose         stack traces on errors`;

export async function planCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommand('plan', argv, {
    tp: { type: 'string' }, target: { type: 'string' }, dtype: { type: 'string' }, device: { type: 'string' },
    'max-seq-len': { type: 'string' }, context: { type: 'string' }, 'max-tokens': { type: 'string' }, json: { type: 'boolean' },
  });
  if (values.help) {
    console.log(PLAN_HELP);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError('mistral-compile plan', undefined, `expects one config path (got ${positionals.length})`, 'pass a params.json or a model directory');
  const target = choiceArg('--target', values.target as string | undefined, TARGETS, 'cpu');
  const dtype = choiceArg('--dtype', values.dtype as string | undefined, DTYPES, 'bf16');
  const tp = choiceArg('--tp', values.tp as string | undefined, TP_SIZES.map(String), '1');
  const maxSeqLen = values['max-seq-len'] === undefined ? undefined : intArg('--max-seq-len', values['max-seq-len'] as string, 0, 1, 1 << 24);
  const maxTokens = intArg('--max-tokens', values['max-tokens'] as string | undefined, 512, 1, 65536);
  const model = loadModelConfig(positionals[0]!, { maxSeqLen });
  const plan = buildPlan(model, { target, dtype, tp: Number(tp) as TpSize, maxTokens });
  // --device and --context shape only the text report, but a wrong one is wrong with --json too:
  // checked before either output, so that a script learns of it instead of getting exit 0.
  const device = loadDeviceProfile((values.device as string | undefined) ?? (target === 'cuda' ? 'h100' : 'cpu'));
  const context = intArg('--context', values.context as string | undefined, Math.min(4096, model.max_seq_len), 1, model.max_seq_len);
  if (values.json) {
    process.stdout.write(JSON.stringify(plan, null, 2) + '\n');
    return 0;
  }
  console.log(planReport(plan, device, context));
  return 0;
}
