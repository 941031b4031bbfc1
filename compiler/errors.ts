/**
 * Errors are part of the interface: every failure a user can cause names the file (or argument),
 * the field, the value, and the fix, on one line. The CLI prints `message` alone (the stack only
 * with --verbose) and exits non-zero.
 */
export class MistralCompileError extends Error {
  /** The file or command-line argument the problem was found in. */
  readonly where: string;
  /** The field inside it, when there is one (a JSON key, a tensor name). */
  readonly field: string | undefined;
  /** What would be valid, or what to do. */
  readonly fix: string;
  /** Long output behind the one line (a compiler's messages), printed with --verbose. */
  details: string | undefined;

  constructor(where: string, field: string | undefined, problem: string, fix: string) {
    const location = field === undefined ? where : `${where}: ${field}`;
    super(`${location}: ${problem}; ${fix}`.replace(/\s*\n\s*/g, ' '));
    this.name = new.target.name;
    this.where = where;
    this.field = field;
    this.fix = fix;
  }
}

/** params.json (or a model directory) is malformed, inconsistent or describes an unsupported model. */
export class ConfigError extends MistralCompileError {}

/** The requested plan options cannot be satisfied for this model (e.g. TP size that does not shard). */
export class PlanError extends MistralCompileError {}

/**
 * Characters that could break a one-line message or rewrite what a terminal shows: C0 and C1
 * controls (U+009B is a CSI), line separators, bidirectional marks and overrides.
 */
export const TERMINAL_UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/** Renders a user-supplied value for an error message: bounded length, control characters escaped. */
export function showValue(value: unknown): string {
  let text: string;
  if (typeof value === 'string') text = JSON.stringify(value);
  else if (typeof value === 'number' || typeof value === 'boolean' || value === null) text = String(value);
  else if (value === undefined) text = 'missing';
  else {
    try {
      text = JSON.stringify(value) ?? String(value);
    } catch {
      text = Object.prototype.toString.call(value);
    }
  }
  // JSON.stringify leaves line separators and bidirectional overrides as they are: a value could
  // break the one-line message or reorder what a terminal shows.
  // C1 controls (U+0080-U+009F: U+009B is a terminal's CSI) likewise.
  text = text.replace(TERMINAL_UNSAFE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
