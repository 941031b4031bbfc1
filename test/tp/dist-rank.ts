/**
 * One rank of a model split over processes (test/tp/distributed.test.ts): loads with
 * distributed: 'env' (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT from the test), runs the job's
 * calls and prints one JSON line: the logits rows (base64 float32) or the error's message.
 *
 *   tsx test/tp/dist-rank.ts '{"dir": …, "cacheDir": …, "calls": [[tokens, startPos, allLogits], …], "exitAfter": n?}'
 */
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadModel } from '../../runtime/model.js';

interface Job {
  dir: string;
  cacheDir: string;
  calls: Array<[number[], number, boolean]>;
  /** Exit the process (without closing anything) after this many calls: a rank that dies. */
  exitAfter?: number;
  /** Append a byte to the checkpoint after this many calls: this rank's next forward fails on its own. */
  modifyAfter?: number;
  /** Instead of `calls`: sequences of their own (model.sequence()), each's chunks in order, all at once; rows sequence by sequence. */
  sequences?: number[][][];
}

const job = JSON.parse(process.argv[2]!) as Job;
const rows: string[] = [];
try {
  const model = await loadModel(job.dir, { cacheDir: job.cacheDir, maxTokens: 8, threads: 1, distributed: 'env' });
  const perSequence = await Promise.all((job.sequences ?? []).map(async (chunks) => {
    const sequence = model.sequence();
    const out: Float32Array[] = [];
    for (const chunk of chunks) out.push(...await sequence.forward(chunk));
    return out;
  }));
  for (const row of perSequence.flat()) rows.push(Buffer.from(row.buffer, row.byteOffset, row.byteLength).toString('base64'));
  for (const [i, [tokens, startPos, allLogits]] of (job.sequences === undefined ? job.calls : []).entries()) {
    if (job.modifyAfter === i) appendFileSync(join(job.dir, 'consolidated.safetensors'), Buffer.alloc(1));
    if (job.exitAfter === i) {
      console.log(JSON.stringify({ rows, exited: true }));
      process.exit(0);
    }
    for (const row of await model.forward(tokens, startPos, allLogits)) rows.push(Buffer.from(row.buffer, row.byteOffset, row.byteLength).toString('base64'));
  }
  model.close();
  console.log(JSON.stringify({ rows, distributed: model.distributed }));
} catch (err) {
  console.log(JSON.stringify({ rows, error: (err as Error).message }));
}
