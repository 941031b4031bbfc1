/**
 * JSON.parse, plus two refusals that matter for files we compile from or map into memory:
 *
 * - a key repeated inside one object: JSON.parse silently keeps the last, Python's json the last,
 *   other readers the first or an error, so such a file can mean different things to different
 *   tools (one checkpoint, two sets of weights);
 * - nesting deeper than a limit: no params.json or safetensors header nests beyond 3 levels, and
 *   deep values only exhaust the stack of later recursive code (JSON.stringify in a message).
 *
 * The values are still JSON.parse's own (no second parser whose numbers or escapes could
 * disagree with it): a scan of the already-valid text only looks at structure and keys.
 */

export type StrictJsonProblem =
  /** Not JSON at all; `reason` is the parser's first line, or a hint for Python's NaN/Infinity. */
  | { kind: 'syntax'; reason: string }
  /** `key` appears twice in the object at `at` (keys and indices from the top; [] for the top level). */
  | { kind: 'duplicate'; key: string; at: Array<string | number> }
  /** The value at `at` is nested more than `limit` levels deep. */
  | { kind: 'depth'; limit: number; at: Array<string | number> };

export class StrictJsonError extends Error {
  constructor(readonly problem: StrictJsonProblem) {
    super(problem.kind === 'syntax' ? problem.reason
      : problem.kind === 'duplicate' ? `duplicate key ${JSON.stringify(problem.key)} in ${jsonPath(problem.at) || 'the top-level object'}`
        : `nested deeper than ${problem.limit} levels at ${jsonPath(problem.at)}`);
  }
}

/** Deeper than any real params.json (2) or safetensors header (3), far below any stack limit. */
export const DEFAULT_MAX_DEPTH = 64;

/** Parses `text` as JSON; throws StrictJsonError on bad syntax, a duplicate key or deep nesting. */
export function parseStrictJson(text: string, maxDepth = DEFAULT_MAX_DEPTH): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new StrictJsonError({ kind: 'syntax', reason: syntaxReason(text, err) });
  }
  const problem = scanStructure(text, maxDepth);
  if (problem !== undefined) throw new StrictJsonError(problem);
  return value;
}

function syntaxReason(text: string, err: unknown): string {
  // Python's json.dump writes NaN and Infinity for non-finite floats; JSON has no such tokens.
  const outsideStrings = text.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  const bare = /(?<![\w.])-?(NaN|Infinity)(?![\w.])/.exec(outsideStrings);
  if (bare !== null) return `${bare[0]} is not a JSON number (Python writes it for a non-finite float)`;
  if (text.charCodeAt(0) === 0xfeff) return 'it starts with a byte-order mark (U+FEFF)';
  return printable(err instanceof Error ? err.message : String(err));
}

/**
 * The parser's message quotes the input: keep it to one short line of printable text (no control
 * characters or bidirectional overrides that could rewrite a terminal line).
 */
function printable(message: string): string {
  const line = message.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g,
    (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return line.length > 200 ? `${line.slice(0, 197)}...` : line;
}

/**
 * One pass over text that JSON.parse accepted: a stack of the key sets of the open objects (null
 * for arrays). Iterative, so depth costs memory, not stack. Returns the first problem found.
 */
function scanStructure(text: string, maxDepth: number): StrictJsonProblem | undefined {
  const keys: Array<Set<string> | null> = [];
  // For messages: the key (object) or element index (array) at each open level.
  const at: Array<string | number> = [];
  let expectKey = false;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let j = i + 1;
      let escaped = false;
      for (;;) {
        const d = text.charCodeAt(j);
        if (d === 0x5c /* \ */) {
          escaped = true;
          j += 2;
        } else if (d === 0x22) {
          break;
        } else {
          j++;
        }
      }
      if (expectKey) {
        const key = escaped ? (JSON.parse(text.slice(i, j + 1)) as string) : text.slice(i + 1, j);
        const set = keys[keys.length - 1]!;
        if (set.has(key)) return { kind: 'duplicate', key, at: at.slice(0, -1) };
        set.add(key);
        at[at.length - 1] = key;
        expectKey = false;
      }
      i = j;
      continue;
    }
    switch (c) {
      case 0x7b: // {
      case 0x5b: // [
        keys.push(c === 0x7b ? new Set() : null);
        at.push(c === 0x7b ? '' : 0);
        if (keys.length > maxDepth) return { kind: 'depth', limit: maxDepth, at: at.slice(0, -1) };
        expectKey = c === 0x7b;
        break;
      case 0x7d: // }
      case 0x5d: // ]
        keys.pop();
        at.pop();
        expectKey = false;
        break;
      case 0x2c: // ,
        if (keys[keys.length - 1] === null) at[at.length - 1] = (at[at.length - 1] as number) + 1;
        else expectKey = true;
        break;
      default:
        break;
    }
  }
  return undefined;
}

/** moe.num_experts, sliding_window[2]: the way messages name a field. */
export function jsonPath(parts: ReadonlyArray<string | number>): string {
  let out = '';
  for (const p of parts) out += typeof p === 'number' ? `[${p}]` : out === '' ? p : `.${p}`;
  return out;
}
