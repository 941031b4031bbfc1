import { parseArgs, type ParseArgsConfig } from 'node:util';
import { MistralCompileError } from '../errors.js';

/** A bad command line: names the argument and the fix. */
export class UsageError extends MistralCompileError {}

type Options = NonNullable<ParseArgsConfig['options']>;

/** util.parseArgs, with its errors turned into one-line UsageErrors that point at --help. */
export function parseCommand(command: string, argv: string[], options: Options): { values: Record<string, string | boolean | undefined>; positionals: string[] } {
  try {
    return parseArgs({ args: joinNegativeValues(argv, options), options: { ...options, help: { type: 'boolean', short: 'h' }, verbose: { type: 'boolean' } }, allowPositionals: true, strict: true });
  } catch (err) {
    const message = err instanceof Error ? err.message.split('\n')[0]! : String(err);
    throw new UsageError(`mistral-compile ${command}`, undefined, message.replace(/\.$/, ''), `see mistral-compile ${command} --help`);
  }
}

/** A value that starts with '-' but is a number, never an option: "-1", "-0.5", "-.5", "-1e3". */
const NEGATIVE_NUMBER = /^-\.?\d/;

/**
 * Rewrites "--opt -1" as "--opt=-1" when --opt takes a value. parseArgs calls a value that starts
 * with '-' ambiguous (it could be a forgotten value followed by an option) and stops there; a
 * negative number is no option of ours, so it is the value, and the option's own range check then
 * names the problem, as it does for "--opt=-1".
 */
function joinNegativeValues(argv: string[], options: Options): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') return [...out, ...argv.slice(i)];  // the rest is positionals, as parseArgs reads them
    const next = argv[i + 1];
    if (arg.startsWith('--') && !arg.includes('=') && options[arg.slice(2)]?.type === 'string' && next !== undefined && NEGATIVE_NUMBER.test(next)) {
      out.push(`${arg}=${next}`);
      i++;
    } else out.push(arg);
  }
  return out;
}

/** Parses an integer argument, or fails naming it. */
export function intArg(name: string, value: string | undefined, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (!/^-?\d+$/.test(value)) throw new UsageError(name, undefined, `must be an integer (got ${JSON.stringify(value)})`, `pass ${name} N with N from ${min} to ${max}`);
  const n = Number(value);
  if (n < min || n > max) throw new UsageError(name, undefined, `is out of range (got ${n})`, `pass a value from ${min} to ${max}`);
  return n;
}

/** Parses one of a fixed set of words, or fails naming the argument and the choices. */
export function choiceArg<T extends string>(name: string, value: string | undefined, choices: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if (!(choices as readonly string[]).includes(value)) throw new UsageError(name, undefined, `unknown value ${JSON.stringify(value)}`, `use one of ${choices.join(', ')}`);
  return value as T;
}
