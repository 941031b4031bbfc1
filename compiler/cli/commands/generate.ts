import { loadModel, MAX_POSITIONS, type LoadedModel } from '../../../runtime/model.js';
import { showValue } from '../../errors.js';
import { intArg, parseCommand, UsageError } from '../args.js';
import { isRankZero, Progress, rankPrefix } from '../progress.js';
import { parseTokenList } from '../tokens.js';
import { onTerminatingSignal } from '../../on-signal.js';
import { checkPromptFits, loadOptions, MODEL_OPTIONS, MODEL_OPTIONS_HELP, modelDir } from './model-options.js';

export const GENERATE_HELP = `usage: mistral-compile generate --model DIR --tokens 1,2,3 --max-tokens N [options]

Prefills the prompt, then decodes token by token; prints the new token ids as they come and the
prefill and decode speed.

options:
  --max-tokens N    tokens to generate (required)
  --temperature T   0 = greedy (default 0)
  --top-p P         nucleus sampling mass (default 1)
  --seed S          sampling seed (default 0)
  --stop 2,3        token ids that end generation (not printed)
${MODEL_OPTIONS_HELP}`;

/** Parses a real-valued argument in [min, max], or in (min, max] with minExclusive. */
function realArg(name: string, value: string | undefined, fallback: number, min: number, max: number, minExclusive = false): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  const below = minExclusive ? n <= min : n < min;
  // "greater than 0", not "from 5e-324": the bound a person means, not the smallest double above it.
  const range = minExclusive ? `greater than ${min} and at most ${max}` : `from ${min} to ${max}`;
  // A decimal number as people write it (0.7, .5, 1e-3): Number() would also take 0x10, 0b1 and " 0.5".
  const decimal = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(value);
  if (!decimal || !Number.isFinite(n) || below || n > max) throw new UsageError(name, undefined, `must be a number ${range} (got ${showValue(value)})`, `pass e.g. ${name} ${fallback}`);
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
  const topP = realArg('--top-p', values['top-p'] as string | undefined, 1, 0, 1, true);
  const seed = intArg('--seed', values.seed as string | undefined, 0, 0, 2 ** 31 - 1);
  const stop = values.stop === undefined ? [] : parseTokenList(values.stop as string, '--stop');
  const prompt = parseTokenList(values.tokens as string | undefined);
  const json = Boolean(values.json);
  const progress = new Progress(json, rankPrefix());
  const generated: number[] = [];
  let prefillSeconds: number | undefined;
  let decodeSeconds = 0;
  let key: string | null = null;
  let notes: readonly string[] = [];  // the config's, once loaded
  // One process per rank (WORLD_SIZE > 1): rank 0 alone prints, from the start (an interruption
  // while the model loads included).
  let quiet = !isRankZero();
  // Ctrl-C (or a kill) while it compiles, loads or generates: end the line of ids, or print the JSON
  // of what was generated, with the speeds so far, then end by the signal. (Writes to stdout and
  // stderr are synchronous on Linux, for pipes and files too, so they land before the process ends.)
  // What --json prints, at the end or when interrupted. The first token's time is the prefill (plus
  // one sampling); each later one is one decode step. null, not a number, where nothing was timed
  // (no decode step; a clock that did not move).
  const result = (stopped: string) => ({
    prompt_tokens: prompt.length, tokens: generated, stopped,
    prefill_tokens_per_s: prefillSeconds !== undefined && prefillSeconds > 0 ? prompt.length / prefillSeconds : null,
    decode_tokens_per_s: generated.length > 1 && decodeSeconds > 0 ? (generated.length - 1) / decodeSeconds : null,
    key,
    notes,
  });
  const release = onTerminatingSignal(() => {
    if (quiet) return;
    if (json) {
      process.stdout.write(`${JSON.stringify(result('interrupted'))}\n`);
    } else {
      if (generated.length > 0) process.stdout.write('\n');
      progress.line(`${key ?? 'generate'}: interrupted after ${generated.length} of ${maxTokens} tokens`);
    }
  });
  let model: LoadedModel;
  try {
    const dir = modelDir(values);
    const options = loadOptions(values);
    checkPromptFits(dir, options, prompt.length);
    model = await loadModel(dir, { ...options, onProgress: (e) => {
      if (e.stage === 'config') notes = e.notes;
      progress.onLoad(e);
    } });
  } catch (err) {
    release();
    throw err;
  }
  key = model.plan.key;
  // One process per rank (WORLD_SIZE set): every rank samples the same tokens from the same full
  // logits with the same seed; rank 0 alone prints them.
  quiet = model.distributed !== undefined && model.distributed.rank !== 0;
  try {
    const started = performance.now();
    let t = started;
    for await (const token of model.generate(prompt, { maxTokens, temperature, topP, seed, stop })) {
      const now = performance.now();
      if (prefillSeconds === undefined) prefillSeconds = (now - t) / 1000;
      else decodeSeconds += (now - t) / 1000;
      t = now;
      generated.push(token);
      if (!json && !quiet) process.stdout.write(`${generated.length === 1 ? '' : ','}${token}`);
    }
    // No token came (--max-tokens 0, or the first sample was a --stop id): generate() still ran the
    // prefill (and that one sample) before it finished, so the whole loop was the prefill.
    prefillSeconds ??= (performance.now() - started) / 1000;
  } finally {
    release();
    model.close();
  }
  const stopped = stopReason(model, prompt.length, generated.length, maxTokens);
  if (quiet) return 0;
  const r = result(stopped);
  if (json) {
    console.log(JSON.stringify(r));
  } else {
    process.stdout.write('\n');
    const speed = (tps: number | null) => (tps === null ? '' : ` at ${tps.toFixed(1)} tokens/s`);
    progress.line(`${model.plan.key}: prefill ${prompt.length} tokens${speed(r.prefill_tokens_per_s)}, decode ${Math.max(0, generated.length - 1)} tokens${speed(r.decode_tokens_per_s)}`);
    if (stopped === 'context') {
      const limit = model.maxPositions;
      progress.line(limit === model.config.max_seq_len
        ? `note: generation stopped at the context limit (max_seq_len ${limit}) after ${generated.length} of ${maxTokens} tokens; --max-seq-len N allows a longer sequence`
        : `note: generation stopped at the ${limit} positions one sequence may have, after ${generated.length} of ${maxTokens} tokens`);
    }
  }
  return 0;
}

/**
 * Why generation ended. generate() yields a token and then stops when the next position would not
 * fit, so a context stop leaves prompt + generated one past the limit; a --stop id is not yielded and
 * ends generation before that.
 */
function stopReason(model: LoadedModel, promptTokens: number, generated: number, maxTokens: number): 'max_tokens' | 'stop_token' | 'context' {
  if (generated >= maxTokens) return 'max_tokens';
  return promptTokens + generated > model.maxPositions ? 'context' : 'stop_token';
}
