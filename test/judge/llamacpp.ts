/**
 * llama.cpp as an outside judge (npm node-llama-cpp 3.22, prebuilt CPU binaries): full-vocabulary
 * logits for every position of a token sequence, from a GGUF file.
 *
 * Used to check our float64 reference against an implementation we did not write. llama.cpp's
 * `llama` architecture ignores sliding_window, so only window-free configs can be judged this way.
 */
import type { ControlledEvaluateInputItem, Llama, Token } from 'node-llama-cpp';

let loading: Promise<Llama | null> | undefined;
let failure: string | undefined;

/**
 * The process-wide CPU-only llama.cpp instance, or null when node-llama-cpp cannot load here (not
 * installed, no prebuilt binary for this platform): then `llamaUnavailableReason()` says why, so a
 * test can skip with that message. Never builds from source and never downloads anything.
 */
export function tryLoadLlama(): Promise<Llama | null> {
  loading ??= (async () => {
    try {
      const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
      return await getLlama({
        gpu: false,
        build: 'never',
        skipDownload: true,
        progressLogs: false,
        logLevel: LlamaLogLevel.error,
      });
    } catch (error) {
      failure = `node-llama-cpp could not load a CPU llama.cpp: ${error instanceof Error ? error.message : String(error)}`;
      return null;
    }
  })();
  return loading;
}

/** Why tryLoadLlama() returned null (undefined before it is called or when it succeeded). */
export function llamaUnavailableReason(): string | undefined {
  return failure;
}

export interface LlamaCppLogitsOptions {
  /** CPU threads for evaluation (default: node-llama-cpp's choice). */
  threads?: number;
}

/**
 * Logits for every position of `tokens` (result[p] predicts the token after position p, one
 * float32 per vocabulary entry), evaluated in one prefill with no BOS added.
 *
 * The KV cache is F32: llama.cpp's default f16 cache alone costs ~2.6e-4 relative L2 against a
 * float64 reference, which would hide real errors of ours.
 */
export async function llamaCppLogits(ggufPath: string, tokens: number[], options: LlamaCppLogitsOptions = {}): Promise<Float32Array[]> {
  const llama = await tryLoadLlama();
  if (llama === null) throw new Error(llamaUnavailableReason());
  if (tokens.length === 0) return [];
  const model = await llama.loadModel({ modelPath: ggufPath, gpuLayers: 0 });
  try {
    const context = await model.createContext({
      // One slot more than the tokens: a context filled exactly gave a wrong last row (~0.5 relative L2).
      contextSize: Math.max(tokens.length + 1, 16),
      batchSize: tokens.length,
      sequences: 1,
      flashAttention: false,
      experimentalKvCacheKeyType: 'F32',
      experimentalKvCacheValueType: 'F32',
      ...(options.threads === undefined ? {} : { threads: options.threads }),
    });
    try {
      const sequence = context.getSequence();
      const input: ControlledEvaluateInputItem[] = tokens.map((t) => [t as Token, { generateNext: { logits: true } }]);
      const results = await sequence.controlledEvaluate(input);
      return tokens.map((_, p) => {
        const logits = results[p]?.next.logits;
        if (logits === undefined) throw new Error(`llama.cpp returned no logits for position ${p} of ${ggufPath}`);
        return toDense(logits, p, ggufPath);
      });
    } finally {
      await context.dispose();
    }
  } finally {
    await model.dispose();
  }
}

/** The Map over the vocabulary (sorted by logit) as a dense array indexed by token id. */
function toDense(logits: Map<Token, number>, position: number, ggufPath: string): Float32Array {
  const dense = new Float32Array(logits.size).fill(NaN);
  for (const [token, value] of logits) {
    if (!Number.isInteger(token) || token < 0 || token >= logits.size) {
      throw new Error(`llama.cpp logits for position ${position} of ${ggufPath} hold token ${token} outside 0..${logits.size - 1}`);
    }
    dense[token] = value;
  }
  return dense;
}
