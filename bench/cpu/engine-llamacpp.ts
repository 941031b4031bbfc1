/**
 * Child process: llama.cpp (npm node-llama-cpp, prebuilt CPU binaries, no GPU) on the GGUF of the
 * same checkpoint, with the same thread count, warm-up, prompt and decode tokens as ours. Decode
 * steps feed our fixed tokens through the generator (its own greedy pick is replaced), so both
 * engines evaluate the very same sequence.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { Token } from 'node-llama-cpp';
import { BandwidthProbe } from './bandwidth.js';
import { readJob, residentMemory, seconds, sendResult, timedDecode, type DecodeSegment } from './protocol.js';

const job = readJob();
const rssBefore = residentMemory().current;
const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
const llama = await getLlama({ gpu: false, build: 'never', skipDownload: true, progressLogs: false, logLevel: LlamaLogLevel.error, maxThreads: job.threads });
const model = await llama.loadModel({ modelPath: job.path, gpuLayers: 0 });
const kvType = job.kvType ?? 'F16';
const context = await model.createContext({
  contextSize: 1024,
  batchSize: job.prompt.length,
  sequences: 1,
  threads: { ideal: job.threads, min: job.threads },
  experimentalKvCacheKeyType: kvType,
  experimentalKvCacheValueType: kvType,
});
const sequence = context.getSequence();

/** node-llama-cpp's version, from its package.json (not in its exports map). */
function nodeLlamaCppVersion(): string {
  const entry = createRequire(import.meta.url).resolve('node-llama-cpp');
  for (let dir = dirname(entry); dir !== dirname(dir); dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'node-llama-cpp') return pkg.version ?? '?';
    } catch { /* keep climbing */ }
  }
  return '?';
}

/** Prefills `prompt` from position 0, then feeds `decode` one token per step (timed in segments between bandwidth probes when `probe`). */
async function run(prompt: number[], decode: number[], probe?: BandwidthProbe) {
  await sequence.clearHistory();
  const gen = sequence.evaluate(prompt as Token[], { yieldEogToken: true });
  const started = performance.now();
  await gen.next(); // evaluates the whole prompt, samples one token
  const prefill = seconds(started);
  const step = async (i: number) => { await gen.next(decode[i] as Token); }; // one single-token decode step
  let segments: DecodeSegment[] = [];
  if (probe !== undefined) segments = await timedDecode(decode.length, probe, step);
  else for (let i = 0; i < decode.length; i++) await step(i);
  await gen.return();
  return { prefill, segments };
}

try {
  await run(job.prompt.slice(0, 16), job.decode.slice(0, 4));
  const probe = await BandwidthProbe.start(job.bandwidthExe, job.threads);
  const prefillSeconds: number[] = [];
  const decodeSegments: DecodeSegment[][] = [];
  for (let r = 0; r < job.repeats; r++) {
    const { prefill, segments } = await run(job.prompt, job.decode, probe);
    prefillSeconds.push(prefill);
    decodeSegments.push(segments);
  }
  probe.close();
  sendResult({ prefillSeconds, decodeSegments, rssBeforeBytes: rssBefore, peakBytes: residentMemory().peak,
    notes: [`llama.cpp ${llama.llamaCppRelease.release} (its build tag in node-llama-cpp ${nodeLlamaCppVersion()}'s prebuilt CPU binaries)`,
      `KV cache ${kvType}`, `flash attention ${String(context.flashAttention)}`, `threads ${context.currentThreads}`] });
} finally {
  await context.dispose();
  await model.dispose();
  await llama.dispose();
}
