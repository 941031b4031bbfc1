/** --tokens and --tokens @FILE (compiler/cli/tokens.ts): what they take, and bounded, one-line refusals. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { UsageError } from '../../compiler/cli/args.js';
import { parseTokenList } from '../../compiler/cli/tokens.js';

const dir = mkdtempSync(join(tmpdir(), 'mc-tokens-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const file = (name: string, text: string | Buffer) => {
  writeFileSync(join(dir, name), text);
  return `@${join(dir, name)}`;
};
const refusal = (value: string) => {
  try {
    parseTokenList(value);
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error('expected a refusal');
};

describe('--tokens', () => {
  it('reads a list, or a file of ids separated by commas or white space', () => {
    expect(parseTokenList('1,2,3')).toEqual([1, 2, 3]);
    expect(parseTokenList(file('ok.txt', ' 1, 2\n3\t4 ,5\n'))).toEqual([1, 2, 3, 4, 5]);
    expect(parseTokenList(file('trailing.txt', '1,2,3,'))).toEqual([1, 2, 3]);  // as `seq 3 | tr '\n' ,` writes it
  });

  it('refuses an empty id in a file as on the command line', () => {
    expect(refusal('1,,2')).toMatch(/^--tokens: \[1\]: "" is not a token id/);
    expect(refusal(file('gap.txt', '1,2,,3'))).toMatch(/^--tokens @\S*gap\.txt: \[2\]: "" is not a token id/);
  });

  it('stops reading an endless input (/dev/zero) at 64 MiB, with one line', () => {
    expect(refusal('@/dev/zero')).toBe('--tokens: /dev/zero is longer than 64 MiB; pass a file of token ids (a prompt of a million ids is ~7 MiB), not a device or an endless stream');
  });

  it('keeps the line short and escaped whatever the file holds', () => {
    const long = refusal(file('word.txt', 'x'.repeat(5_000_000)));
    expect(long.length).toBeLessThan(300);
    const control = refusal(file('c1.txt', '1 2\u009b31m 3'));
    expect(control).toContain('\\u009b');
    expect(control).not.toMatch(/[\u0080-\u009f]/);
    expect(refusal('1,\u202e2')).toContain('\\u202e');
  });

  it('names what cannot be read: a missing file, a directory, @ alone', () => {
    expect(refusal(`@${join(dir, 'missing.txt')}`)).toMatch(/^--tokens: cannot read \S*missing\.txt \(ENOENT\); pass @ and a readable file/);
    expect(refusal(`@${dir}`)).toMatch(/\(EISDIR\)/);
    expect(refusal('@')).toBe('--tokens: cannot read a file (ENOENT); name the file after @, e.g. --tokens @prompt.txt, or @- for standard input');
  });
});
