import { MistralCompileError } from '../compiler/errors.js';

/** A bad call into a loaded model: a token id out of range, a closed model, an empty prompt. */
export class RuntimeError extends MistralCompileError {}
