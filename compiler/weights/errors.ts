import { MistralCompileError } from '../errors.js';

/**
 * A weights file (safetensors, GGUF) is malformed, does not match the model, or cannot be written.
 * `where` is the file, `field` the tensor or header field, as for every MistralCompileError.
 */
export class WeightsError extends MistralCompileError {}
