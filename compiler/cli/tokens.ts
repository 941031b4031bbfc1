import { UsageError } from './args.js';

/** Parses "--tokens 1,2,3" into token ids (range-checked later, against the model's vocabulary). */
export function parseTokenList(value: string | undefined): number[] {
  if (value === undefined || value.trim() === '') throw new UsageError('--tokens', undefined, 'is required', 'pass comma-separated token ids, e.g. --tokens 1,2,3');
  return value.split(',').map((part, i) => {
    const text = part.trim();
    if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text))) {
      throw new UsageError('--tokens', `[${i}]`, `${JSON.stringify(text)} is not a token id`, 'pass non-negative integers separated by commas');
    }
    return Number(text);
  });
}
