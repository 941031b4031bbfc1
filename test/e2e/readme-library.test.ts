/**
 * README's "As a library" example runs as written: the code block, with only the package name and
 * the model directory replaced, in a process of its own (an example that threw went unnoticed once:
 * it continued a sequence at a position generate() had already passed).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { packageRoot } from '../../compiler/paths.js';
import { createWorkspace, DENSE_GQA, writeModelDir, type ModelDir, type Workspace } from './helpers.js';

let ws: Workspace;
let model: ModelDir;
beforeAll(async () => {
  ws = await createWorkspace('readme-library');
  model = await writeModelDir(ws.root, 'dense', { params: { ...DENSE_GQA } }, { seed: 900, dtype: 'bf16' });
});
afterAll(async () => ws?.remove());

it('README\'s library example loads a model, continues a sequence, generates and closes', async () => {
  const readme = readFileSync(join(packageRoot(), 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## As a library'));
  const block = /```ts\n([\s\S]*?)```/.exec(section)?.[1];
  expect(block, 'a ts code block under "## As a library"').toBeDefined();
  expect(block).toContain("from 'mistral-compile'");
  expect(block).toContain("'path/to/model-dir'");
  // The package's entry as source (index.ts through tsx), so that the test needs no build of dist/.
  const script = block!.replace("from 'mistral-compile'", `from ${JSON.stringify(join(packageRoot(), 'index.ts'))}`)
    .replace("'path/to/model-dir'", JSON.stringify(model.dir))
    .replace("{ target: 'cpu' }", `{ target: 'cpu', cacheDir: ${JSON.stringify(ws.cacheDir)} }`)
    + '\nconsole.log(`rows ${logits.length} ${logits[0].length} last ${last.length}`);\n';
  const file = join(ws.root, 'example.mts');
  writeFileSync(file, script);
  const run = await execa(join(packageRoot(), 'node_modules', '.bin', 'tsx'), [file], { cwd: ws.root, reject: false, all: true });
  expect(run.exitCode, run.all).toBe(0);
  const lines = String(run.stdout).trim().split('\n');
  expect(lines.at(-1)).toBe(`rows 3 ${model.config.vocab_size} last ${model.config.vocab_size}`);
  const tokens = lines.slice(0, -1).map(Number);
  expect(tokens.length).toBeGreaterThan(0);
  expect(tokens.length).toBeLessThanOrEqual(16);
  for (const t of tokens) expect(Number.isInteger(t) && t >= 0 && t < model.config.vocab_size && t !== 2).toBe(true);
}, 120_000);
