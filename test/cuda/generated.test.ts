/**
 * generated/ holds the rendered CUDA sources of Mistral 7B v0.1 and Mixtral 8x7B; a template change
 * must come with its regenerated output (npm run generate:refresh), so reviews see the C++ diff.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { expectedGenerated, GENERATED_CONFIGS, generatedRoot, listFiles, renderGenerated } from './generated.js';

const FIX = 'generated/ is stale: run `npm run generate:refresh` and commit the result';

describe('generated/', () => {
  it.each(GENERATED_CONFIGS)('holds exactly what the templates render for %s', (config) => {
    const { key, files } = renderGenerated(config);
    const dir = join(generatedRoot(), key);
    expect(existsSync(dir), `${dir} is missing; ${FIX}`).toBe(true);
    expect(listFiles(dir), `files of generated/${key}; ${FIX}`).toEqual(files.map((f) => f.path).sort());
    for (const f of files) expect(readFileSync(join(dir, f.path), 'utf8') === f.content, `generated/${key}/${f.path} differs; ${FIX}`).toBe(true);
  });

  it('holds nothing else (no directory of a config no longer rendered, no stray file)', () => {
    expect(listFiles(generatedRoot()), FIX).toEqual([...expectedGenerated().keys()].sort());
  });
});
