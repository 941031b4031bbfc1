import { isDeepStrictEqual } from 'node:util';
import { ConfigError, showValue } from '../errors.js';
import type { ModelConfig } from './model.js';
import { normalizeParams } from './normalize.js';

/**
 * The fields of a ModelConfig that reach a plan, and so generated code. A config that did not come
 * from normalizeParams (the API takes plain data) is read back as the params.json it stands for:
 * each of these must come out as it went in.
 */
const PLANNED_FIELDS = ['dim', 'n_layers', 'head_dim', 'hidden_dim', 'n_heads', 'n_kv_heads', 'norm_eps', 'vocab_size', 'rope_theta',
  'sliding_window', 'moe', 'tied_embeddings', 'max_seq_len', 'max_batch_size'] as const;

/**
 * Checks a ModelConfig as normalizeParams checks a params.json (ranges, divisibility, windows, the
 * name), so that only validated numbers reach generated code whatever built the object; throws the
 * ConfigError normalizeParams would, or names the field that no params.json could give.
 */
export function checkModelConfig(model: ModelConfig): void {
  const m = model as unknown as Record<string, unknown> | null;
  if (typeof m !== 'object' || m === null || Array.isArray(m)) {
    throw new ConfigError('model config', undefined, `is ${showValue(m)}, not an object`, 'pass the result of loadModelConfig or normalizeParams');
  }
  const source = typeof m.source === 'string' ? m.source : '<model config>';
  if (typeof m.name !== 'string') throw new ConfigError(source, 'name', `is ${showValue(m.name)}, not a string`, 'pass the result of loadModelConfig or normalizeParams');
  if (!Array.isArray(m.notes) || !m.notes.every((n) => typeof n === 'string')) {
    throw new ConfigError(source, 'notes', `is ${showValue(m.notes)}, not a list of strings`, 'pass the result of loadModelConfig or normalizeParams');
  }
  const raw: Record<string, unknown> = {};
  for (const field of PLANNED_FIELDS) raw[field] = m[field];
  if (m.moe === null) delete raw.moe;
  const again = normalizeParams(raw, source, { name: m.name }) as unknown as Record<string, unknown>;
  for (const field of PLANNED_FIELDS) {
    if (!isDeepStrictEqual(again[field], m[field])) {
      throw new ConfigError(source, field, `is ${showValue(m[field])}, which no params.json gives (it reads as ${showValue(again[field])})`,
        'pass the result of loadModelConfig or normalizeParams, changed only in ways a params.json could be');
    }
  }
}
