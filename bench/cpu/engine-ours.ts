/**
 * Child process: our compiled CPU model on one benchmark checkpoint. Warm-up (a short prefill and a
 * few decode steps: the library built or taken from the cache, pages of the mapped weights faulted
 * in), then `repeats` times: prefill of the prompt as a new sequence, decode of the given tokens.
 */
import { loadModel } from '../../runtime/model.js';
import { BandwidthProbe } from './bandwidth.js';
import { readJob, residentMemory, seconds, sendResult, timedDecode, type DecodeSegment } from './protocol.js';

const job = readJob();
process.env.OMP_NUM_THREADS = String(job.threads); // before the first compiled library loads
const rssBefore = residentMemory().current;
const model = await loadModel(job.path, { threads: job.threads, cacheDir: job.cacheDir, maxTokens: job.prompt.length, maxSeqLen: 1024 });
try {
  await model.forward(job.prompt.slice(0, 16), 0, false);
  for (let i = 0; i < 4; i++) await model.forward([job.decode[i]!], 16 + i, false);

  const probe = await BandwidthProbe.start(job.bandwidthExe, job.threads);
  const prefillSeconds: number[] = [];
  const decodeSegments: DecodeSegment[][] = [];
  for (let r = 0; r < job.repeats; r++) {
    const started = performance.now();
    await model.forward(job.prompt, 0, false);
    prefillSeconds.push(seconds(started));
    decodeSegments.push(await timedDecode(job.decode.length, probe, async (i) => {
      await model.forward([job.decode[i]!], job.prompt.length + i, false);
    }));
  }
  probe.close();
  sendResult({ prefillSeconds, decodeSegments, rssBeforeBytes: rssBefore, peakBytes: residentMemory().peak,
    notes: [`library ${model.library}`, `KV cache ${model.plan.options.dtype}`] });
} finally {
  model.close();
}
