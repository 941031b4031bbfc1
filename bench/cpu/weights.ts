/**
 * Benchmark checkpoints under .bench/weights/<model>/: params.json, consolidated.safetensors (our
 * engine) and model.gguf (llama.cpp, the same bytes), written once and reused while complete.json
 * still matches the model's params, seed and dtype.
 */
import { existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeGgufFromCheckpoint } from '../../compiler/weights/gguf.js';
import { writeRandomWeights } from '../../compiler/weights/random.js';
import { benchConfig, type BenchModel } from './models.js';

export interface BenchWeights {
  dir: string;
  safetensorsPath: string;
  ggufPath: string;
  safetensorsBytes: number;
}

export async function ensureWeights(root: string, model: BenchModel, log: (line: string) => void): Promise<BenchWeights> {
  const dir = join(root, model.name);
  const safetensorsPath = join(dir, 'consolidated.safetensors');
  const ggufPath = join(dir, 'model.gguf');
  const stamp = join(dir, 'complete.json');
  const wanted = JSON.stringify({ params: model.params, seed: model.seed, dtype: model.dtype });
  const fresh = existsSync(stamp) && readFileSync(stamp, 'utf8') === wanted && existsSync(safetensorsPath) && existsSync(ggufPath);
  if (!fresh) {
    rmSync(dir, { recursive: true, force: true });
    const config = benchConfig(model, dir);
    const started = performance.now();
    log(`writing random weights for ${model.name} (${model.dtype}, seed ${model.seed}) to ${dir}`);
    await writeRandomWeights(config, dir, { seed: model.seed, dtype: model.dtype });
    await writeGgufFromCheckpoint(config, safetensorsPath, ggufPath);
    writeFileSync(stamp, wanted);
    log(`wrote ${model.name} in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }
  return { dir, safetensorsPath, ggufPath, safetensorsBytes: statSync(safetensorsPath).size };
}
