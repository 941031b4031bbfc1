import { closeSync, openSync, readSync } from 'node:fs';
import { showValue, TERMINAL_UNSAFE } from '../errors.js';
import { UsageError } from './args.js';

/**
 * The most bytes "@FILE" reads: ~9 million ids, far beyond any context, and a bound on what an
 * endless input (/dev/zero, `yes 1,`) can take before it is refused.
 */
export const MAX_TOKEN_FILE_BYTES = 64 << 20;

/**
 * Parses "--tokens 1,2,3" into token ids (range-checked later, against the model's vocabulary).
 * "@FILE" reads them from FILE ("@-": standard input), separated by commas or white space: a long
 * prompt does not fit one command-line argument (Linux caps one at 128 KiB, ~20k ids).
 */
export function parseTokenList(value: string | undefined, option = '--tokens'): number[] {
  if (value === undefined || value.trim() === '') throw new UsageError(option, undefined, 'is required', `pass comma-separated token ids, e.g. ${option} 1,2,3, or ${option} @FILE`);
  let text = value;
  let where = option;
  let parts: string[];
  if (value.startsWith('@')) {
    const path = value.slice(1);
    where = `${option} ${showPath(value)}`;
    text = readTokenFile(path, option);
    // Commas or white space between ids, and one after the last (`seq N | tr '\n' ,` writes it); two
    // commas in a row leave an empty id, refused as on the command line.
    const ids = text.trim().replace(/\s*,$/, '');
    parts = ids === '' ? [] : ids.split(/\s*,\s*|\s+/);
  } else {
    parts = text.split(',');
  }
  if (parts.length === 0) throw new UsageError(where, undefined, 'holds no token id', 'write token ids separated by commas or white space');
  return parts.map((part, i) => {
    const id = part.trim();
    if (!/^\d+$/.test(id) || !Number.isSafeInteger(Number(id))) {
      throw new UsageError(where, `[${i}]`, `${showValue(id)} is not a token id`, 'pass non-negative integers separated by commas');
    }
    return Number(id);
  });
}

/** A path as typed, unless it holds what could rewrite a terminal line or is very long: then quoted, escaped and cut. */
function showPath(path: string): string {
  return path.length > 200 || new RegExp(TERMINAL_UNSAFE.source).test(path) ? showValue(path) : path;
}

/** FILE's text ("-": standard input), read up to MAX_TOKEN_FILE_BYTES. */
function readTokenFile(path: string, option: string): string {
  const shown = path === '-' ? 'standard input' : path === '' ? 'a file' : showPath(path);
  const fail = (err: unknown): never => {
    throw new UsageError(option, undefined, `cannot read ${shown} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
      path === '' ? 'name the file after @, e.g. --tokens @prompt.txt, or @- for standard input'
        : 'pass @ and a readable file of token ids separated by commas or white space, or @- for standard input');
  };
  let fd: number;
  try {
    fd = path === '-' ? 0 : openSync(path, 'r');
  } catch (err) {
    return fail(err);
  }
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    const chunk = Buffer.alloc(1 << 20);
    for (;;) {
      let n: number;
      try {
        n = readSync(fd, chunk, 0, chunk.length, null);
      } catch (err) {
        // Standard input may be a non-blocking pipe: wait for its writer rather than fail.
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') {
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
          continue;
        }
        return fail(err);
      }
      if (n === 0) break;
      total += n;
      if (total > MAX_TOKEN_FILE_BYTES) {
        throw new UsageError(option, undefined, `${shown} is longer than ${MAX_TOKEN_FILE_BYTES >> 20} MiB`,
          'pass a file of token ids (a prompt of a million ids is ~7 MiB), not a device or an endless stream');
      }
      chunks.push(Buffer.from(chunk.subarray(0, n)));
    }
    return Buffer.concat(chunks).toString('utf8');
  } finally {
    if (fd !== 0) closeSync(fd);
  }
}
