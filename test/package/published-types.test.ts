/**
 * The package's published types (dist/index.d.ts and what it imports) type-check in a consumer
 * that has no @types/node: a TypeScript user of the library should not need Node's types to
 * import it. The declarations are emitted from the sources here, as `npm run build` emits them.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import ts from 'typescript';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '../..');

let out: string | undefined;
afterAll(async () => {
  if (out !== undefined) await rm(out, { recursive: true, force: true });
});

function messages(diagnostics: readonly ts.Diagnostic[]): string[] {
  return diagnostics.map((d) => {
    const where = d.file === undefined ? '' : `${d.file.fileName}(${d.file.getLineAndCharacterOfPosition(d.start ?? 0).line + 1}): `;
    return where + ts.flattenDiagnosticMessageText(d.messageText, '\n');
  });
}

describe('the published types', () => {
  it('type-check from dist/index.d.ts without @types/node (strict, library checks on)', async () => {
    // Inside the checkout, so that the declarations find the package's dependencies as a consumer's would.
    await mkdir(join(ROOT, 'node_modules', '.cache'), { recursive: true });
    out = await mkdtemp(join(ROOT, 'node_modules', '.cache', 'mc-types-'));
    const emit = ts.createProgram([join(ROOT, 'index.ts')], {
      target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext,
      strict: true, esModuleInterop: true, resolveJsonModule: true, skipLibCheck: true, types: ['node'],
      declaration: true, emitDeclarationOnly: true, rootDir: ROOT, outDir: out,
    }).emit();
    expect(messages(emit.diagnostics)).toEqual([]);

    const consumer = ts.createProgram([join(out, 'index.d.ts')], {
      target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext,
      strict: true, noEmit: true, skipLibCheck: false, types: [], lib: ['lib.es2022.d.ts'],  // no DOM globals either
    });
    expect(messages(ts.getPreEmitDiagnostics(consumer))).toEqual([]);
  }, 120_000);
});
