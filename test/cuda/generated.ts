/**
 * generated/: the rendered CUDA sources of two reference configs, kept in git so that a change to
 * a template or to mc_cuda.cuh shows up as a readable diff. generated.test.ts fails when they are
 * stale; refresh them with `npm run generate:refresh` (tsx test/cuda/generated.ts --write).
 */
import { mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModelConfig } from '../../compiler/config/load.js';
import { renderCudaSources } from '../../compiler/emit/render-cuda.js';
import type { SourceFile } from '../../compiler/emit/render.js';
import { packageRoot } from '../../compiler/paths.js';
import { buildPlan } from '../../compiler/plan/build-plan.js';

/** Config names under configs/models/, rendered with these options (the defaults of `build --target cuda`). */
export const GENERATED_CONFIGS = ['mistral-7b-v0.1', 'mixtral-8x7b'] as const;
export const GENERATED_OPTIONS = { target: 'cuda', dtype: 'bf16', tp: 1, maxTokens: 512 } as const;

export function generatedRoot(): string {
  return join(packageRoot(), 'generated');
}

/** The files of one config, as generated/<key>/ should hold them (plus a README naming their origin). */
export function renderGenerated(config: string): { key: string; files: SourceFile[] } {
  const model = loadModelConfig(join(packageRoot(), 'configs', 'models', config));
  const plan = buildPlan(model, GENERATED_OPTIONS);
  const readme: SourceFile = {
    path: 'README.md',
    content: `# ${plan.key}\n\nRendered CUDA sources of \`configs/models/${config}/params.json\` with \`mistral-compile build configs/models/${config} --target cuda --dtype bf16 --tp 1 --max-tokens 512\` ` +
      `(max_seq_len ${model.max_seq_len} from params.json). Do not edit: \`npm run generate:refresh\` rewrites them, and CI fails when they differ from what the templates render.\n`,
  };
  return { key: plan.key, files: [readme, ...renderCudaSources(plan).files] };
}

export function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const path = join(d, name);
      if (statSync(path).isDirectory()) walk(path);
      else out.push(relative(dir, path));
    }
  };
  walk(dir);
  return out;
}

/** Every file generated/ should hold (paths relative to it), with its content. */
export function expectedGenerated(): Map<string, string> {
  const files = new Map<string, string>();
  for (const config of GENERATED_CONFIGS) {
    const { key, files: rendered } = renderGenerated(config);
    for (const f of rendered) files.set(join(key, f.path), f.content);
  }
  return files;
}

function write(): void {
  const root = generatedRoot();
  // What no config renders any more (a renamed kernel, a config dropped from the list) goes too.
  const expected = expectedGenerated();
  for (const path of listFiles(root)) if (!expected.has(path)) rmSync(join(root, path));
  for (const name of readdirSync(root)) {
    if (statSync(join(root, name)).isDirectory() && ![...expected.keys()].some((p) => p.startsWith(`${name}/`))) rmSync(join(root, name), { recursive: true, force: true });
  }
  for (const config of GENERATED_CONFIGS) {
    const { key, files } = renderGenerated(config);
    const dir = join(root, key);
    rmSync(dir, { recursive: true, force: true });
    for (const f of files) {
      mkdirSync(dirname(join(dir, f.path)), { recursive: true });
      writeFileSync(join(dir, f.path), f.content);
    }
    console.log(`generated/${key}: ${files.length} files`);
  }
}

// Run directly: `tsx test/cuda/generated.ts --write` (npm run generate:refresh).
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  if (process.argv.includes('--write')) write();
  else console.log('usage: tsx test/cuda/generated.ts --write   (rewrites generated/ from the templates)');
}
