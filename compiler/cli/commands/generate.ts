import { loadModel } from '../../../runtime/model.js';
import { intArg, parseCommand, UsageError } from '../args.js';
import { Progress, rankPrefix } from '../progress.js';
import { parseTokenList } from '../tokens.js';
import { loadOptions, MODEL_OPTIONS, MODEL_OPTIONS_HELP, modelDir } from './model-options.js';

export const GENERATE_HELP = `usage: mistral-compile generate --model DIR --tokens 1,2,3 --max-tokens N [options]

Prefills the prompt, then decodes token by token; prints the new token ids as they come and the
prefill and decode speed.

options:
  --max-tokens N    tokens to generate (required)
  --temperature T   0 = greedy (default 0)
  --top-p P         nucleus sampling mass (default 1)
  --seed S          sampling seed (default 0)
  --stop 2,3        token ids that end generation
${MODEL_OPTIONS_HELP}`;

function realArg(name: string, value: string | undefined, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < min || n > max) throw new UsageError(name, undefined, `must be a number from ${min} to ${max} (got ${JSON.stringify(value)})`, `pass e.g. ${name} ${fallback}`);
  return n;
}

export async function generateCommand(argv: string[]): Promise<number> {
  const { values } = parseCommand('generate', argv, {
    ...MODEL_OPTIONS, 'max-tokens': { type: 'string' }, temperature: { type: 'string' }, 'top-p': { type: 'string' }, seed: { type: 'string' }, stop: { type: 'string' },
  });
  if (values.help) return console.log(GENERATE_HELP), 0;
  if (values['max-tokens'] === undefined) throw new UsageError('--max-tokens', undefined, 'is required', 'pass how many tokens to generate, e.g. --max-tokens 32');
  const maxTokens = intArg('--max-tokens', values['max-tokens'] as string, 0, 0, 1 << 24);
  const temperature = realArg('--temperature', values.temperature as string | undefined, 0, 0, 100);
  const topP = realArg('--top-p', values['top-p'] as string | undefined, 1, Number.MIN_VALUE, 1);
  const seed = intArg('--seed', values.seed as string | undefined, 0, 0, 2 ** 31 - 1);
  const stop = values.stop === undefined ? [] : parseTokenList(values.stop as string);
  const prompt = parseTokenList(values.tokens as string | undefined);
  const json = Boolean(values.json);
  const progress = new Progress(json, rankPrefix());
  const model = await loadModel(modelDir(values), { ...loadOptions(values), onProgress: progress.onLoad });
  // One process per rank (WORLD_SIZE set): every rank samples the same tokens from the same full
  // logits with the same seed; rank 0 alone prints them.
  const quiet = model.distributed !== undefined && model.distributed.rank !== 0;
  const generated: number[] = [];
  let prefillSeconds = 0;
  let decodeSeconds = 0;
  try {
    let t = performance.now();
    for await (const token of model.generate(prompt, { maxTokens, temperature, topP, seed, stop })) {
      const now = performance.now();
      if (generated.length === 0) prefillSeconds = (now - t) / 1000;
      else decodeSeconds += (now - t) / 1000;
      t = now;
      generated.push(token);
      if (!json && !quiet) process.stdout.write(`${generated.length === 1 ? '' : ','}${token}`);
    }
  } finally {
    model.close();
  }
  // The first token's time is the prefill (plus one sampling); each later one is one decode step.
  const prefillTps = prompt.length / Math.max(prefillSeconds, 1e-9);
  const decodeTps = generated.length > 1 ? (generated.length - 1) / decodeSeconds : 0;
  if (quiet) return 0;
  if (json) {
    console.log(JSON.stringify({ prompt_tokens: prompt.length, tokens: generated, prefill_tokens_per_s: prefillTps, decode_tokens_per_s: decodeTps, key: model.plan.key }));
  } else {
    process.stdout.write('\n');
    progress.line(`${model.plan.key}: prefill ${prompt.length} tokens at ${prefillTps.toFixed(1)} tokens/s, decode ${Math.max(0, generated.length - 1)} tokens at ${decodeTps.toFixed(1)} tokens/s`);
  }
  return 0;
}
