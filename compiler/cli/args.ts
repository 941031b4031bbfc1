import { parseArgs, type ParseArgsConfig } from 'node:util';
import { MistralCompileError } from '../errors.js';

/** A bad command line: names the argument and the fix. */
export class UsageError extends MistralCompileError {}

type Options = NonNullable<ParseArgsConfig['options']>;

/** util.parseArgs, with its errors turned into one-line UsageErrors that point at --help. */
export function parseCommand(command: string, argv: string[], options: Options): { values: Record<string, string | boolean | undefined>; positionals: string[] } {
  try {
    return parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' }, verbose: { type: 'boolean' } }, allowPositionals: true, strict: true });
  } catch (err) {
    const message = err instanceof Error ? err.message.split('\n')[0]! : String(err);
    throw new UsageError(`mistral-compile ${command}`, undefined, message.replace(/\.$/, ''), `see mistral-compile ${command} --help`);
  }
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
