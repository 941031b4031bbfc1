/**
 * Compiled libraries for the GPU check: built here through the normal build cache, or taken from a
 * manifest written by prebuild.ts when its sources hash the same (the build cache key also holds
 * the host CPU's flags, so a library built on another machine would otherwise be rebuilt).
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import { buildPlanLibrary } from '../../compiler/build/build.js';
import { BACKENDS } from '../../compiler/build/backends.js';
import { hashFiles } from '../../compiler/emit/render.js';
import type { Plan } from '../../compiler/plan/types.js';
import { readSafetensorsHeader } from '../../compiler/weights/safetensors.js';
import { checkCheckpointMatchesPlan, rankWeightViews } from '../../runtime/checkpoint.js';
import { singleFileCheckpoint } from '../../runtime/checkpoint-files.js';
import type { NativeModelInstance, NativeWeight } from '../../runtime/native.js';
import { loadNativeAddon } from '../../runtime/native-loader.js';

export interface Manifest {
  archs: string[];
  /** plan key → sources hash and library path (relative to the manifest). */
  libraries: Record<string, { sources: string; library: string }>;
  /** "config.dtype" → kernel-check binary (relative to the manifest). */
  kernelChecks: Record<string, string>;
  /** "config.dtype" → hash of the sources that binary was built from (kernelCheckHash); absent in older manifests. */
  kernelCheckSources?: Record<string, string>;
  /** bench/gpu/boundaries.cu's binary (relative to the manifest) and the hash of its sources (boundariesSources); absent in older manifests. */
  boundaries?: { sources: string; binary: string };
}

export function sourcesHash(plan: Plan): string {
  return hashFiles(BACKENDS[plan.options.target]!.render(plan).files);
}

export function readManifest(path: string | undefined): { manifest: Manifest; dir: string } | undefined {
  if (path === undefined || !existsSync(path)) return undefined;
  return { manifest: JSON.parse(readFileSync(path, 'utf8')) as Manifest, dir: dirname(path) };
}

export async function libraryFor(plan: Plan, options: { cacheDir: string; archs?: string[]; prebuilt?: ReturnType<typeof readManifest> }): Promise<{ library: string; prebuilt: boolean }> {
  const entry = options.prebuilt?.manifest.libraries[plan.key];
  const sameArchs = plan.options.target !== 'cuda' || options.prebuilt?.manifest.archs.join(',') === (options.archs ?? []).join(',');
  if (entry !== undefined && sameArchs && entry.sources === sourcesHash(plan)) {
    const library = isAbsolute(entry.library) ? entry.library : join(options.prebuilt!.dir, entry.library);
    if (existsSync(library)) return { library, prebuilt: true };
  }
  const built = await buildPlanLibrary(plan, { cacheDir: options.cacheDir, archs: plan.options.target === 'cuda' ? options.archs : undefined });
  return { library: built.library, prebuilt: false };
}

/** A model instance over a safetensors checkpoint with an explicit library (no rebuild). */
export async function openCheckpoint(library: string, plan: Plan, safetensorsPath: string): Promise<NativeModelInstance> {
  const checkpoint = singleFileCheckpoint(await readSafetensorsHeader(safetensorsPath));
  checkCheckpointMatchesPlan(checkpoint, plan);
  const addon = loadNativeAddon();
  const file = new addon.MappedFile(safetensorsPath);
  try {
    return new addon.ModelInstance(new addon.CompiledLibrary(library), file, rankWeightViews(checkpoint, plan, 0), 0);
  } finally {
    file.close();
  }
}

/** A model instance whose weights are views into any mapped file (synthetic benchmark weights). */
export function openViews(library: string, path: string, weights: NativeWeight[]): NativeModelInstance {
  const addon = loadNativeAddon();
  const file = new addon.MappedFile(path);
  try {
    return new addon.ModelInstance(new addon.CompiledLibrary(library), file, weights, 0);
  } finally {
    file.close();
  }
}
