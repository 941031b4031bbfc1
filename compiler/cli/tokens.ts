import { readFileSync } from 'node:fs';
import { UsageError } from './args.js';

/**
 * Parses "--tokens 1,2,3" into token ids (range-checked later, against the model's vocabulary).
 * "@FILE" reads them from FILE ("@-": standard input), separated by commas or white space: a long
 * prompt does not fit one command-line argument (Linux caps one at 128 KiB, ~20k ids).
 */
export function parseTokenList(value: string | undefined, option = '--tokens'): number[] {
  if (value === undefined || value.trim() === '') throw new UsageError(option, undefined, 'is required', `pass comma-separated token ids, e.g. ${option} 1,2,3, or ${option} @FILE`);
  let text = value;
  let where = option;
  if (value.startsWith('@')) {
    const path = value.slice(1);
    where = `${option} ${value}`;
    try {
      text = readFileSync(path === '-' ? 0 : path, 'utf8');
    } catch (err) {
      throw new UsageError(option, undefined, `cannot read ${path === '-' ? 'standard input' : path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
        'pass @ and a readable file of token ids separated by commas or white space, or @- for standard input');
    }
  }
  const parts = value.startsWith('@') ? text.split(/[\s,]+/).filter((p) => p !== '') : text.split(',');
  if (parts.length === 0) throw new UsageError(where, undefined, 'holds no token id', 'write token ids separated by commas or white space');
  return parts.map((part, i) => {
    const id = part.trim();
    if (!/^\d+$/.test(id) || !Number.isSafeInteger(Number(id))) {
      throw new UsageError(where, `[${i}]`, `${JSON.stringify(id)} is not a token id`, 'pass non-negative integers separated by commas');
    }
    return Number(id);
  });
}
