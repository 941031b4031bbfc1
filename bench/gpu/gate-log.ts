/**
 * The MoE gate logits as the CUDA library computes them, read without a GPU: its rendered sources
 * with the gate kernel (templates/cuda/rmsnorm_moe_gate_topk_softmax.cuh.hbs) also appending each
 * token's logits to the file MC_GATE_LOG names, for an emulated build (test/cuda/emu: a kernel is
 * host code there, so it can write a file; nvcc would refuse fopen in device code). Used by
 * bench/gpu/routing-drift.ts.
 */
import type { SourceFile } from '../../compiler/emit/render.js';

/** The environment variable the logging gate kernel appends to. */
export const GATE_LOG_ENV = 'MC_GATE_LOG';

// The gate kernel's first line after its logits are summed into shared memory.
const ANCHOR = '  bool taken[EXPERTS] = {};';
const PRINT = `  { FILE* f = fopen(getenv("${GATE_LOG_ENV}"), "a"); fprintf(f, "%d %d", t, (int)gridDim.x);
    for (int e = 0; e < EXPERTS; ++e) fprintf(f, " %.9g", logits[e]); fprintf(f, "\\n"); fclose(f); }\n`;

/** `files` with the gate kernel logging: one line "t T logit…" per token of each launch. */
export function gateLoggingSources(files: readonly SourceFile[]): SourceFile[] {
  let patched = 0;
  const out = files.map((f) => {
    if (!f.path.includes('rmsnorm_moe_gate_topk_softmax')) return f;
    patched++;
    if (!f.content.includes(ANCHOR)) throw new Error(`gate-log.ts: ${f.path} no longer has the line \`${ANCHOR.trim()}\` to log the gate logits before`);
    return { ...f, content: `#include <cstdio>\n#include <cstdlib>\n${f.content.replace(ANCHOR, PRINT + ANCHOR)}` };
  });
  if (patched !== 1) throw new Error(`gate-log.ts: ${patched} rendered files hold the gate kernel (expected 1: an MoE model's sources)`);
  return out;
}

/**
 * A gate log as [layer][position]: per forward call, each layer's T lines "t T logits…" in turn
 * (a launch's tokens in any order). Anything else is refused rather than misread.
 */
export function parseGateLog(text: string, layers: number, positions: number, experts: number): Float64Array[][] {
  const lines = text.split('\n').filter((s) => s !== '');
  const gates: Float64Array[][] = Array.from({ length: layers }, () => []);
  let i = 0, base = 0;
  while (i < lines.length) {
    const T = Number(lines[i]!.split(' ')[1]);
    if (!Number.isInteger(T) || T < 1) throw new Error(`gate log line ${i + 1}: no token count: ${lines[i]}`);
    for (let l = 0; l < layers; l++) {
      for (let j = 0; j < T; j++, i++) {
        const [t, lineT, ...logits] = (lines[i] ?? '').split(' ').map(Number);
        if (lineT !== T || !Number.isInteger(t) || t! < 0 || t! >= T || logits.length !== experts || logits.some(Number.isNaN) || gates[l]![base + t!] !== undefined) {
          throw new Error(`gate log line ${i + 1} is not the next of layer ${l}'s ${T} tokens from position ${base}: ${lines[i] ?? '(the end)'}`);
        }
        gates[l]![base + t!] = Float64Array.from(logits);
      }
    }
    base += T;
  }
  if (base !== positions) throw new Error(`the gate log covers ${base} positions, not ${positions}`);
  return gates;
}
