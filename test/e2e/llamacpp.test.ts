/**
 * Our compiled model against llama.cpp, an implementation we did not write: the same random f32
 * checkpoint is compiled by us and converted to GGUF for llama.cpp (F32 KV cache), and the logits
 * of every position are compared. llama.cpp ignores sliding windows, so these configs have none.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { writeGgufFromCheckpoint } from '../../compiler/weights/gguf.js';
import { loadModel } from '../../runtime/model.js';
import { llamaCppLogits, llamaUnavailableReason, tryLoadLlama } from '../judge/llamacpp.js';
import {
  createWorkspace, DENSE_GQA, expectRowsWithin, formatError, tokensFor, TOLERANCE, writeModelDir, type Workspace,
} from './helpers.js';

/**
 * Under 16: llamaCppLogits sizes the context max(tokens, 16), and llama.cpp's last row is wrong
 * (relative L2 ~0.5) when the tokens fill the context exactly; rows before it are fine.
 */
const N_TOKENS = 15;

const CASES: Array<{ what: string; params: Record<string, unknown> }> = [
  { what: 'dense GQA (4 heads, 2 KV heads)', params: DENSE_GQA },
  { what: 'MoE top-2 of 8 experts', params: { ...DENSE_GQA, moe: { num_experts: 8, num_experts_per_tok: 2 } } },
];

const llama = await tryLoadLlama();
let ws: Workspace;
beforeAll(async () => {
  ws = await createWorkspace('llamacpp');
});
afterAll(async () => {
  await ws?.remove();
});

describe('compiled logits equal llama.cpp\'s on the same f32 weights', () => {
  CASES.forEach(({ what, params }, i) => {
    it(`for ${what}: relative L2 ≤ ${TOLERANCE.f32.toExponential(0)} at every position`, async (ctx) => {
      if (llama === null) ctx.skip(`skipped: ${llamaUnavailableReason()}`);
      const modelDir = await writeModelDir(ws.root, `case-${i}`, { params }, { seed: 500 + i, dtype: 'f32' });
      const ggufPath = join(ws.root, `case-${i}.gguf`);
      await writeGgufFromCheckpoint(modelDir.config, modelDir.safetensorsPath, ggufPath);
      const tokens = tokensFor(modelDir, N_TOKENS, 600 + i);

      const expected = await llamaCppLogits(ggufPath, tokens);
      const model = await loadModel(modelDir.dir, { cacheDir: ws.cacheDir });
      try {
        const worst = expectRowsWithin(await model.logits(tokens), expected, TOLERANCE.f32);
        ctx.annotate(`max relative L2 vs llama.cpp ${formatError(worst)}`);
      } finally {
        model.close();
      }
    }, 120_000);
  });
});
