/**
 * bench/gpu/gate-log.ts, which routing-drift.ts reads the CUDA library's gate logits through: the
 * gate kernel of the rendered sources gains its logging line (and nothing else changes), and a log
 * is read into [layer][position] or refused, never misread.
 */
import { describe, expect, it } from 'vitest';
import { renderCudaSources } from '../../../compiler/emit/render-cuda.js';
import { LOGITS_CASES, logitsPlan } from '../../../bench/gpu/cases.js';
import { GATE_LOG_ENV, gateLoggingSources, parseGateLog } from '../../../bench/gpu/gate-log.js';

const sourcesOf = (name: string) => renderCudaSources(logitsPlan(LOGITS_CASES.find((c) => c.name === name)!)).files;

describe('gateLoggingSources', () => {
  it('adds the logging line to the gate kernel of an MoE model\'s sources, before its top-k, and changes no other file', () => {
    const files = sourcesOf('gpu-tiny-moe-bf16');
    const logging = gateLoggingSources(files);
    const changed = logging.filter((f, i) => f.content !== files[i]!.content);
    expect(changed.map((f) => f.path)).toEqual([files.find((f) => f.path.includes('rmsnorm_moe_gate_topk_softmax'))!.path]);
    const text = changed[0]!.content;
    expect(text).toContain(`fopen(getenv("${GATE_LOG_ENV}"), "a")`);
    // After the logits are summed, before the top-k reads them.
    expect(text.indexOf('logits[e] = acc[0]')).toBeGreaterThan(0);
    expect(text.indexOf('logits[e] = acc[0]')).toBeLessThan(text.indexOf('fopen('));
    expect(text.indexOf('fprintf(f, " %.9g", logits[e])')).toBeLessThan(text.indexOf('bool taken[EXPERTS] = {};'));
  });

  it('refuses a dense model\'s sources (no gate kernel)', () => {
    expect(() => gateLoggingSources(sourcesOf('gpu-tiny-dense-bf16'))).toThrow('0 rendered files hold the gate kernel');
  });
});

describe('parseGateLog', () => {
  // Two calls of a 2-layer model with 3 experts: a prefill of 3 tokens (in launch order 2, 0, 1), then one token.
  const log = [
    '2 3 0.2 0.21 0.22', '0 3 0 0.01 0.02', '1 3 0.1 0.11 0.12',  // layer 0, positions 0-2
    '1 3 1.1 1.11 1.12', '0 3 1 1.01 1.02', '2 3 1.2 1.21 1.22',  // layer 1
    '0 1 0.3 0.31 0.32', '0 1 1.3 1.31 1.32',                     // position 3, layers 0 and 1
  ];

  it('places each line by its call, layer and token', () => {
    const gates = parseGateLog(`${log.join('\n')}\n`, 2, 4, 3);
    for (let l = 0; l < 2; l++) {
      for (let p = 0; p < 4; p++) expect(Array.from(gates[l]![p]!)).toEqual([0, 1, 2].map((e) => Number(`${l}.${p}${e}`)));
    }
  });

  it('refuses a log it would otherwise misread', () => {
    const without = (i: number) => log.filter((_, j) => j !== i).join('\n');
    expect(() => parseGateLog(without(7), 2, 4, 3)).toThrow("gate log line 8 is not the next of layer 1's 1 tokens from position 3: (the end)");
    expect(() => parseGateLog(without(3), 2, 4, 3)).toThrow("gate log line 6 is not the next of layer 1's 3 tokens from position 0: 0 1 0.3");  // layer 1 short a line
    expect(() => parseGateLog(log.join('\n').replace('1 3 1.1', '0 3 1.1'), 2, 4, 3)).toThrow('line 5 is not');       // token 0 twice in layer 1: the second
    expect(() => parseGateLog(log.join('\n'), 2, 4, 4)).toThrow('line 1');                                           // 3 logits, not 4
    expect(() => parseGateLog(log.join('\n'), 2, 5, 3)).toThrow('the gate log covers 4 positions, not 5');
    expect(() => parseGateLog(`0 0 1 2 3\n${log.join('\n')}`, 2, 4, 3)).toThrow('gate log line 1: no token count');
  });
});
