import { ConfigError, showValue } from '../errors.js';
import type { ModelConfig, MoeConfig } from './model.js';

/**
 * Validates a parsed params.json and resolves it into the canonical ModelConfig.
 *
 * Every number that leaves this function has been checked to be a finite number of the right kind
 * inside a stated range: only these numbers ever reach generated C++/CUDA source.
 */

/** Keys this reader understands. Others are reported in `notes` and ignored, as the reference does. */
const KNOWN_KEYS = new Set([
  'dim', 'n_layers', 'head_dim', 'hidden_dim', 'n_heads', 'n_kv_heads', 'norm_eps', 'vocab_size',
  'rope_theta', 'sliding_window', '_sliding_window', 'moe', 'max_batch_size', 'max_seq_len',
  'model_type', 'tied_embeddings', 'lora', 'vision_encoder', 'quantization', 'yarn', 'llama_4_scaling', 'rope_scaling',
]);
/** Keys of the moe object (mistral-inference's MoeArgs). */
const MOE_KEYS = new Set(['num_experts', 'num_experts_per_tok']);

/** Upper bounds: far above any real model, low enough that products stay exact in int64/double. */
export const LIMITS = {
  dim: 1 << 16,
  n_layers: 1024,
  head_dim: 1024,
  hidden_dim: 1 << 20,
  n_heads: 1024,
  vocab_size: 1 << 22,
  num_experts: 1024,
  max_seq_len: 1 << 24,
  max_batch_size: 1 << 16,
  rope_theta: 1e12,
  /**
   * Tensors in the checkpoint (Mixtral 8x22B has 1,736): the plan lists every one, so without a
   * bound a 200-byte file (1024 layers × 1024 experts) would make a plan of 3 million entries.
   */
  tensors: 1 << 16,
} as const;

/** The smallest normal float32: the kernels compute RMSNorm in float32, where a smaller eps rounds away. */
const MIN_NORM_EPS = 2 ** -126;

/** Default context when params.json declares none: Mistral 7B v0.3's 32k. */
export const DEFAULT_MAX_SEQ_LEN = 32768;

export interface NormalizeOptions {
  /** Name for the model; defaults to the directory or file name of `source`. */
  name?: string;
  /** Overrides params.json's max_seq_len (e.g. a short context for tests). */
  maxSeqLen?: number;
}

type Json = Record<string, unknown>;

class Checker {
  constructor(private readonly file: string) {}

  fail(field: string, value: unknown, problem: string, fix: string): never {
    // A missing field has no value to show ("required field is missing (got missing)" said it twice).
    throw new ConfigError(this.file, field, value === undefined ? problem : `${problem} (got ${showValue(value)})`, fix);
  }

  int(obj: Json, field: string, min: number, max: number, path = field): number {
    const value = obj[field];
    if (value === undefined || value === null) {
      this.fail(path, value, 'required field is missing', `add "${field}": an integer from ${min} to ${max}`);
    }
    return this.intValue(value, path, min, max);
  }

  intValue(value: unknown, path: string, min: number, max: number): number {
    if (typeof value !== 'number' || !Number.isFinite(value) || !Number.isInteger(value)) {
      this.fail(path, value, 'must be an integer', `write a plain JSON integer from ${min} to ${max}`);
    }
    if (value < min || value > max) {
      this.fail(path, value, 'is out of range', `use an integer from ${min} to ${max}`);
    }
    return value;
  }

  /** A number in (0, exclusiveMax); `example` is a typical value, for the fix. */
  positiveReal(obj: Json, field: string, exclusiveMax: number, example: string): number {
    const value = obj[field];
    if (value === undefined || value === null) {
      this.fail(field, value, 'required field is missing', `add "${field}": a number greater than 0 and below ${exclusiveMax}`);
    }
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value >= exclusiveMax) {
      this.fail(field, value, 'must be a number greater than 0 and below ' + exclusiveMax, `write a plain JSON number such as ${example}`);
    }
    return value;
  }
}

export function normalizeParams(raw: unknown, source: string, options: NormalizeOptions = {}): ModelConfig {
  const c = new Checker(source);
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError(source, undefined, `the top level must be a JSON object (got ${showValue(raw)})`,
      'point at a Mistral params.json such as configs/models/mistral-7b-v0.3/params.json');
  }
  const p = raw as Json;
  rejectUnsupportedArchitectures(c, p);

  const dim = c.int(p, 'dim', 1, LIMITS.dim);
  const n_layers = c.int(p, 'n_layers', 1, LIMITS.n_layers);
  const n_heads = c.int(p, 'n_heads', 1, LIMITS.n_heads);
  const n_kv_heads = c.int(p, 'n_kv_heads', 1, LIMITS.n_heads);
  if (n_kv_heads > n_heads || n_heads % n_kv_heads !== 0) {
    c.fail('n_kv_heads', n_kv_heads, `must divide n_heads (${n_heads}) for grouped-query attention`,
      `use a divisor of ${n_heads} such as ${largestDivisorAtMost(n_heads, n_kv_heads)}`);
  }
  const notes: string[] = [];
  let head_dim: number;
  if (p.head_dim === undefined || p.head_dim === null) {
    if (dim % n_heads !== 0) {
      c.fail('head_dim', p.head_dim, `is missing and dim (${dim}) is not divisible by n_heads (${n_heads})`,
        'add "head_dim" explicitly');
    }
    head_dim = dim / n_heads;
    if (head_dim > LIMITS.head_dim) {
      c.fail('head_dim', p.head_dim, `dim / n_heads = ${head_dim} is out of range`, `add "head_dim" explicitly (2 to ${LIMITS.head_dim}), or use more heads`);
    }
    notes.push(`head_dim absent: using dim / n_heads = ${head_dim}`);
  } else {
    head_dim = c.int(p, 'head_dim', 2, LIMITS.head_dim);
  }
  if (head_dim % 2 !== 0) {
    c.fail('head_dim', head_dim, 'must be even (RoPE rotates pairs of dimensions)', 'use an even head_dim');
  }
  const hidden_dim = c.int(p, 'hidden_dim', 1, LIMITS.hidden_dim);
  const vocab_size = c.int(p, 'vocab_size', 1, LIMITS.vocab_size);
  const norm_eps = c.positiveReal(p, 'norm_eps', 1, '1e-5');
  if (norm_eps < MIN_NORM_EPS) {
    c.fail('norm_eps', norm_eps, `is below the smallest normal float32 (${MIN_NORM_EPS}): the float32 kernels would lose it`, 'use the model\'s value, e.g. 1e-5');
  }

  const sliding_window = readSlidingWindow(c, p, n_layers);
  const anyWindow = sliding_window.some((w) => w !== null);

  let rope_theta: number;
  if (p.rope_theta === undefined || p.rope_theta === null) {
    // Mistral 7B v0.1 ships without rope_theta and was trained with 1e4; the reference's current
    // default (1e6) is right for every later model. A window marks the early models.
    rope_theta = anyWindow ? 1e4 : 1e6;
    notes.push(`rope_theta absent: using ${rope_theta === 1e4 ? '10000 (a sliding_window marks the early models, trained with 1e4)' : '1000000 (the reference default)'}`);
  } else {
    rope_theta = c.positiveReal(p, 'rope_theta', LIMITS.rope_theta, '1000000');
    if (rope_theta < 1) {
      // theta^(-2i/head_dim) would grow with i: the rotation angles of a long context overflow.
      c.fail('rope_theta', rope_theta, 'is below 1, which is not a RoPE base', 'use the model\'s base, e.g. 10000 or 1000000');
    }
  }

  const moe = readMoe(c, p);
  if (moe !== null) {
    // Embedding, final norm and output, plus per layer: 2 norms, 4 attention weights, the gate, 3 per expert.
    const tensors = 3 + n_layers * (7 + 3 * moe.num_experts);
    if (tensors > LIMITS.tensors) {
      c.fail('moe.num_experts', moe.num_experts, `${n_layers} layers × ${moe.num_experts} experts make a checkpoint of ${tensors} tensors, above the ${LIMITS.tensors} a plan lists`,
        'check n_layers and moe.num_experts against the model card');
    }
  }
  const tied_embeddings = readBool(c, p, 'tied_embeddings', false);

  let max_seq_len: number;
  if (options.maxSeqLen !== undefined) {
    max_seq_len = new Checker('--max-seq-len').intValue(options.maxSeqLen, 'value', 1, LIMITS.max_seq_len);
  } else if (p.max_seq_len === undefined || p.max_seq_len === null) {
    max_seq_len = DEFAULT_MAX_SEQ_LEN;
    notes.push(`max_seq_len absent: using ${DEFAULT_MAX_SEQ_LEN}`);
  } else {
    max_seq_len = c.int(p, 'max_seq_len', 1, LIMITS.max_seq_len);
  }
  const max_batch_size = p.max_batch_size === undefined || p.max_batch_size === null
    ? 1 : Math.max(1, c.int(p, 'max_batch_size', 0, LIMITS.max_batch_size));

  // Inside moe too: a newer MoE field left unread would plan a different model without a word.
  const ignored = [...Object.keys(p).filter((k) => !KNOWN_KEYS.has(k)),
    ...(moe === null ? [] : Object.keys(p.moe as Json).filter((k) => !MOE_KEYS.has(k)).map((k) => `moe.${k}`))].sort();
  if (ignored.length > 0) {
    // A hostile file may hold thousands: name a few, count the rest.
    const shown = ignored.slice(0, 10).map((k) => showValue(k)).join(', ');
    notes.push(`ignored keys: ${shown}${ignored.length > 10 ? ` and ${ignored.length - 10} more` : ''}`);
  }

  if (options.name !== undefined && !/^[a-z0-9_]([a-z0-9._-]{0,62}[a-z0-9_])?$/.test(options.name)) {
    // The name becomes file names, the specialization key and text in generated sources.
    throw new ConfigError('name', undefined, `${showValue(options.name)} is not a model name`,
      'use 1 to 64 characters of a-z, 0-9, ".", "_" and "-", not starting or ending with "." or "-"');
  }
  return {
    name: options.name ?? nameFromSource(source),
    source,
    dim, n_layers, head_dim, hidden_dim, n_heads, n_kv_heads, norm_eps, vocab_size, rope_theta,
    sliding_window, moe, tied_embeddings, max_seq_len, max_batch_size, notes,
  };
}

function rejectUnsupportedArchitectures(c: Checker, p: Json): void {
  const modelType = p.model_type;
  if (modelType !== undefined && modelType !== null && modelType !== 'transformer') {
    const what = modelType === 'mamba' ? 'a Mamba model (e.g. Codestral Mamba) is not a transformer' : 'only "transformer" models are supported';
    c.fail('model_type', modelType, `not supported: ${what}`, 'compile a Mistral transformer config (model_type "transformer" or absent)');
  }
  if (p.vision_encoder !== undefined && p.vision_encoder !== null) {
    c.fail('vision_encoder', '{...}', 'not supported: vision encoders (Pixtral) are not compiled',
      'remove "vision_encoder" to compile the text decoder alone, or use a text-only model');
  }
  if (p.lora !== undefined && p.lora !== null && p.dim === undefined) {
    c.fail('lora', '{...}', 'not supported: this is a LoRA adapter config, not a model',
      'point at the base model\'s params.json (merge the adapter into its weights first)');
  }
  if (p.lora !== undefined && p.lora !== null) {
    c.fail('lora', '{...}', 'not supported: LoRA adapters change the weights and are not applied',
      'merge the adapter into the consolidated weights and remove "lora"');
  }
  if (p.quantization !== undefined && p.quantization !== null) {
    c.fail('quantization', p.quantization, 'not supported: quantized checkpoints (e.g. fp8_e4m3) would be read as wrong numbers',
      'use the bf16 checkpoint of this model');
  }
  if (p.llama_4_scaling !== undefined && p.llama_4_scaling !== null) {
    c.fail('llama_4_scaling', p.llama_4_scaling, 'not supported: position-dependent attention scaling (Mistral 3) changes every logit past its original context',
      'use a model without "llama_4_scaling"');
  }
  if (p.rope_scaling !== undefined && p.rope_scaling !== null) {
    c.fail('rope_scaling', p.rope_scaling, 'not supported: scaled RoPE (a Hugging Face config key) changes the positional encoding',
      'use a params.json without "rope_scaling" (this compiler applies plain RoPE with rope_theta)');
  }
  if (p.yarn !== undefined && p.yarn !== null) {
    c.fail('yarn', p.yarn, 'not supported: YaRN rope scaling changes the positional encoding',
      'use a model without "yarn", or remove it to run with plain RoPE up to the original context');
  }
}

function readSlidingWindow(c: Checker, p: Json, n_layers: number): Array<number | null> {
  const hasNew = p.sliding_window !== undefined;
  const hasOld = p._sliding_window !== undefined;
  if (hasNew && hasOld) {
    c.fail('_sliding_window', p._sliding_window, 'both "sliding_window" and its older spelling "_sliding_window" are set',
      'keep only "sliding_window"');
  }
  const field = hasOld ? '_sliding_window' : 'sliding_window';
  const value = hasOld ? p._sliding_window : p.sliding_window;
  if (value === undefined || value === null) return new Array<number | null>(n_layers).fill(null);
  if (Array.isArray(value)) {
    if (value.length === 0 || value.length > n_layers) {
      c.fail(field, value, `a per-layer list needs 1 to n_layers (${n_layers}) entries`, 'list one window (or null) per layer of the repeating pattern');
    }
    if (n_layers % value.length !== 0) {
      c.fail(field, value, `the pattern of ${value.length} entries does not repeat evenly over n_layers (${n_layers})`,
        `use a list whose length divides ${n_layers}`);
    }
    const pattern = value.map((w, i) => (w === null ? null : c.intValue(w, `${field}[${i}]`, 1, LIMITS.max_seq_len)));
    return Array.from({ length: n_layers }, (_, layer) => pattern[layer % pattern.length]!);
  }
  const w = c.intValue(value, field, 1, LIMITS.max_seq_len);
  return new Array<number | null>(n_layers).fill(w);
}

function readMoe(c: Checker, p: Json): MoeConfig | null {
  const moe = p.moe;
  if (moe === undefined || moe === null) return null;
  if (typeof moe !== 'object' || Array.isArray(moe)) {
    c.fail('moe', moe, 'must be an object', 'write "moe": {"num_experts": 8, "num_experts_per_tok": 2}');
  }
  const m = moe as Json;
  const num_experts = c.int(m, 'num_experts', 1, LIMITS.num_experts, 'moe.num_experts');
  const num_experts_per_tok = c.int(m, 'num_experts_per_tok', 1, LIMITS.num_experts, 'moe.num_experts_per_tok');
  if (num_experts_per_tok > num_experts) {
    c.fail('moe.num_experts_per_tok', num_experts_per_tok, `top-k cannot exceed moe.num_experts (${num_experts})`,
      `use a value from 1 to ${num_experts}`);
  }
  return { num_experts, num_experts_per_tok };
}

function readBool(c: Checker, p: Json, field: string, fallback: boolean): boolean {
  const value = p[field];
  if (value === undefined || value === null) return fallback;
  if (typeof value !== 'boolean') c.fail(field, value, 'must be true or false', `write "${field}": true or false`);
  return value;
}

function largestDivisorAtMost(n: number, atMost: number): number {
  for (let d = Math.min(n, Math.max(1, Math.floor(atMost))); d > 1; d--) if (n % d === 0) return d;
  return 1;
}

/** A readable, file-name-safe name from a path: the model directory's name, or the file's stem. */
export function nameFromSource(source: string): string {
  const parts = source.split(/[\\/]/).filter((s) => s.length > 0);
  let base = parts[parts.length - 1] ?? 'model';
  if (base === 'params.json' && parts.length >= 2) base = parts[parts.length - 2]!;
  base = base.replace(/\.json$/i, '');
  // Cut to 64 first, then trimmed: a cut may end in "-" or ".", which a model name may not.
  const slug = base.toLowerCase().replace(/[^a-z0-9._-]+/g, '-').slice(0, 64).replace(/^[-.]+|[-.]+$/g, '');
  return slug.length > 0 ? slug : 'model';
}
