import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { showValue } from '../compiler/errors.js';
import { WeightsError } from '../compiler/weights/errors.js';
import { readSafetensorsHeader, type SafetensorsHeader, type TensorInfo } from '../compiler/weights/safetensors.js';
import { SHARD, shardName } from '../compiler/weights/shards.js';

/**
 * The safetensors files of a model directory, as Mistral publishes them: one
 * consolidated.safetensors, or (the larger models) its shards consolidated-00001-of-0000N.safetensors
 * … consolidated-0000N-of-0000N.safetensors. Each shard is a whole safetensors file holding some of
 * the tensors; the runtime maps every file and points each weight into the one that holds it, so
 * shards are never merged or copied. (consolidated.safetensors.index.json, when present, says the
 * same as the shards' own headers, which are what is read.)
 */
export interface Checkpoint {
  /** Every file, in shard order (one for consolidated.safetensors). */
  files: SafetensorsHeader[];
  /** Every tensor and the index in `files` of the file that holds it. */
  tensors: Map<string, { file: number; info: TensorInfo }>;
  /** Bytes of all files together. */
  bytes: number;
  /** The files as one path for messages: the file itself, or DIR/consolidated-{00001..0000N}-of-0000N.safetensors. */
  display: string;
}

export const SINGLE_FILE = 'consolidated.safetensors';

/** One safetensors file as a checkpoint. */
export function singleFileCheckpoint(header: SafetensorsHeader): Checkpoint {
  return { files: [header], tensors: new Map([...header.tensors].map(([name, info]) => [name, { file: 0, info }])), bytes: header.fileSize, display: header.path };
}

/** More shards than a checkpoint has: a name that says so is refused before a list that long is made. */
const MAX_SHARDS = 100_000;

/**
 * Reads the headers of dir's checkpoint: consolidated.safetensors when it is there (complete by
 * itself, whatever shards lie beside it), else its shards, every one of them, no tensor twice.
 */
export async function readCheckpoint(dir: string): Promise<Checkpoint> {
  const names = listDir(dir);
  const shards = names.flatMap((name) => {
    const m = SHARD.exec(name);
    return m === null ? [] : [{ name, index: Number(m[1]), count: Number(m[2]) }];
  });
  if (names.includes(SINGLE_FILE) || shards.length === 0) {
    // Missing too: the reader's own line names the file (there is nothing else to read).
    return singleFileCheckpoint(await readSafetensorsHeader(join(dir, SINGLE_FILE)));
  }
  const count = shards[0]!.count;
  const other = shards.find((s) => s.count !== count);
  if (other !== undefined) {
    throw new WeightsError(join(dir, other.name), undefined, `says ${other.count} shards where ${shards[0]!.name} says ${count}: shards of two checkpoints are mixed`,
      'keep the shards of one download only');
  }
  // Far more than any checkpoint has: named before a list of that length is made ("Invalid array length").
  if (count > MAX_SHARDS) {
    throw new WeightsError(join(dir, shards[0]!.name), undefined, `says the checkpoint has ${count} shards, more than ${MAX_SHARDS}`,
      'rename or remove the file: it is not a shard of a real checkpoint');
  }
  // Every shard present before any is read: a missing one is the problem to name, not a later one's header.
  const ordered = Array.from({ length: count }, (_, i) => {
    const shard = shards.find((s) => s.index === i + 1);
    if (shard === undefined) {
      throw new WeightsError(join(dir, shardName(i + 1, count)), undefined, `is missing: the checkpoint is sharded in ${count} files and this one is not in ${dir}`,
        'download every shard of the checkpoint');
    }
    return shard;
  });
  const twice = shards.find((s, i) => shards.findIndex((t) => t.index === s.index) !== i);
  if (twice !== undefined) {
    throw new WeightsError(join(dir, twice.name), undefined, `is shard ${twice.index} again, under another name`, 'keep one file per shard');
  }
  const stray = shards.find((s) => s.index < 1 || s.index > count);
  if (stray !== undefined) {
    throw new WeightsError(join(dir, stray.name), undefined, `is shard ${stray.index} of a checkpoint of ${count} shards`, 'keep the shards of one download only');
  }
  const files: SafetensorsHeader[] = [];
  for (const shard of ordered) files.push(await readSafetensorsHeader(join(dir, shard.name)));
  const tensors = new Map<string, { file: number; info: TensorInfo }>();
  files.forEach((header, file) => {
    for (const [name, info] of header.tensors) {
      const seen = tensors.get(name);
      if (seen !== undefined) {
        throw new WeightsError(header.path, `tensor ${showValue(name)}`, `is also in ${files[seen.file]!.path}: a tensor must be in one shard`,
          're-download the checkpoint');
      }
      tensors.set(name, { file, info });
    }
  });
  const width = Math.max(5, String(count).length), pad = (n: number) => String(n).padStart(width, '0');
  return {
    files, tensors, bytes: files.reduce((sum, h) => sum + h.fileSize, 0),
    display: count === 1 ? files[0]!.path : join(dir, `consolidated-{${pad(1)}..${pad(count)}}-of-${pad(count)}.safetensors`),
  };
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];  // the reader of consolidated.safetensors then says what is wrong with the path
  }
}
