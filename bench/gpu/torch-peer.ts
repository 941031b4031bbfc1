/**
 * The PyTorch peer of a decode case (torch_decode.py in a python3 child): decode eager and compiled,
 * and an eager prefill of 512 tokens, each parsed from the JSON lines the script prints.
 */
import { join } from 'node:path';
import { execa } from 'execa';
import { packageRoot } from '../../compiler/paths.js';
import { decodeConfig, type DecodeCase } from './cases.js';

/** One PyTorch decode peer of a model: eager (dynamic cache) or compiled (static cache, torch.compile reduce-overhead). */
export interface TorchPeer { tokensPerSecond: number; msPerToken: number; prefillMs: number; compileS?: number; error?: string }
/** Its eager prefill of `tokens` ids at position 0 (median of 3 after a warm-up). */
export interface TorchPrefill { tokens: number; ms: number; msRuns: number[]; error?: string }
export interface TorchResult { label: string; eager: TorchPeer | null; compiled: TorchPeer | null; prefill: TorchPrefill | null; versions: string; error?: string }

interface PeerLine { tokens_per_second: number; ms_per_token: number; prefill_ms: number; compile_s?: number }
interface ScriptOutput {
  eager?: PeerLine; compiled?: PeerLine; compiled_error?: string;
  prefill?: { tokens: number; ms: number; runs_ms: number[] }; prefill_error?: string;
  torch?: string; transformers?: string;
}

const peer = (r: PeerLine | undefined): TorchPeer | null =>
  r === undefined ? null : { tokensPerSecond: r.tokens_per_second, msPerToken: r.ms_per_token, prefillMs: r.prefill_ms, compileS: r.compile_s };

export async function runTorch(c: DecodeCase, options: { peers: string; timeoutS: number; prefillTokens: number }): Promise<TorchResult> {
  const args = [join(packageRoot(), 'bench', 'gpu', 'torch_decode.py'), '--params', JSON.stringify(decodeConfig(c)), '--prompt', String(c.prompt),
    '--decode', String(c.decode), '--peers', options.peers, '--prefill-tokens', String(options.prefillTokens)];
  const run = await execa('python3', args, { reject: false, all: true, env: { PYTHONUNBUFFERED: '1' }, timeout: options.timeoutS * 1000 });
  const all = String(run.all ?? '');
  // In print order: {"eager"}, {"prefill"}, then one line with everything; a killed run (timeout) leaves the early ones.
  const lines = all.split('\n').filter((l) => l.startsWith('{')).flatMap((l) => {
    try {
      return [JSON.parse(l) as ScriptOutput];
    } catch {
      return [];
    }
  });
  if (lines.length === 0) {
    const tail = (all || (run.shortMessage ?? '')).split('\n').slice(-6).join(' | ');
    return { label: c.label, eager: null, compiled: null, prefill: null, versions: '', error: `exit ${run.exitCode ?? 'none'}${run.timedOut ? ' (timed out)' : ''}: ${tail}` };
  }
  const r = Object.assign({}, ...lines) as ScriptOutput;
  const compiled = peer(r.compiled) ?? (r.compiled_error !== undefined || (run.timedOut && options.peers.includes('compiled'))
    ? { tokensPerSecond: NaN, msPerToken: NaN, prefillMs: NaN, error: r.compiled_error ?? `timed out after ${options.timeoutS} s` } : null);
  const prefill: TorchPrefill | null = r.prefill !== undefined ? { tokens: r.prefill.tokens, ms: r.prefill.ms, msRuns: r.prefill.runs_ms }
    : r.prefill_error !== undefined ? { tokens: options.prefillTokens, ms: NaN, msRuns: [], error: r.prefill_error } : null;
  return { label: c.label, eager: peer(r.eager), compiled, prefill, versions: r.torch ? `torch ${r.torch}, transformers ${r.transformers}` : '' };
}
