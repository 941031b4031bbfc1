import { MistralCompileError } from '../errors.js';

/** A build could not run or failed: names the compiler or the source file, and what to do. */
export class BuildError extends MistralCompileError {}
