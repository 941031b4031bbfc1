/**
 * Compiles what check.ts and profile.ts need ahead of time (on a machine with nvcc and no GPU): every
 * case of cases.ts (logits and kernel checks in bf16, f16 and f32; the decode/prefill models) and the
 * boundary benchmark (boundaries.cu), into DIR with a manifest.json that --prebuilt reads: a lease is
 * then spent measuring, not compiling.
 *
 *   tsx bench/gpu/prebuild.ts DIR [--arch sm_90a]
 */
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { buildPlanLibrary } from '../../compiler/build/build.js';
import { parseArchs } from '../../compiler/build/nvcc.js';
import { hashFiles } from '../../compiler/emit/render.js';
import { packageRoot } from '../../compiler/paths.js';
import type { Plan } from '../../compiler/plan/types.js';
import { decodeCases, decodePlan, KERNEL_CASES, LENT_GPU_MIB, logitsPlan, LOGITS_CASES, longDecodeCases } from './cases.js';
import { boundariesSources, buildBoundaries } from './boundaries.js';
import { buildKernelCheck, kernelCheckHash } from './kernel-check.js';
import { sourcesHash, type Manifest } from './libraries.js';

const { values, positionals } = parseArgs({ options: { arch: { type: 'string', default: 'sm_90a' } }, allowPositionals: true });
const dir = resolve(positionals[0] ?? '.devtools/prebuilt');
const archs = parseArchs(values.arch!);
mkdirSync(dir, { recursive: true });
const manifest: Manifest = { archs, libraries: {}, kernelChecks: {}, kernelCheckSources: {} };

/** At most two compilers at a time (CI-sized machines have 2 cores). */
async function pool<T>(items: T[], work: (item: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  await Promise.all([0, 1].map(async () => {
    for (let item = queue.shift(); item !== undefined; item = queue.shift()) await work(item);
  }));
}

// The benchmark models for every GPU the device tool lends (Mixtral's layer count follows its memory),
// at the usual context and at a long one.
const benchPlans = new Map(LENT_GPU_MIB.flatMap((mib) => [...decodeCases(mib), ...longDecodeCases(mib)]).map((c) => [decodePlan(c).key, decodePlan(c)] as const));
const plans: Plan[] = [...LOGITS_CASES.map(logitsPlan), ...benchPlans.values()];
const started = performance.now();
await pool(plans, async (plan) => {
  const built = await buildPlanLibrary(plan, { cacheDir: join(dir, 'cache'), archs });
  const file = basename(built.library);
  copyFileSync(built.library, join(dir, file));
  manifest.libraries[plan.key] = { sources: sourcesHash(plan), library: file };
  console.log(`${plan.key}: ${file}`);
});
await pool(KERNEL_CASES, async (c) => {
  const binary = await buildKernelCheck(c, join(dir, 'kernels'), archs);
  manifest.kernelChecks[`${c.config}.${c.dtype}`] = join('kernels', basename(binary));
  manifest.kernelCheckSources![`${c.config}.${c.dtype}`] = kernelCheckHash(c);
  console.log(`kernel check ${c.config}.${c.dtype}: ${binary}`);
});
// A baseline tree (prepare.sh --baseline) from before the benchmark has none: its run times decode and prefill only.
if (existsSync(join(packageRoot(), 'bench', 'gpu', 'boundaries.cu'))) {
  const boundaries = await buildBoundaries(join(dir, 'boundaries'), archs);
  manifest.boundaries = { sources: hashFiles(boundariesSources()), binary: join('boundaries', basename(boundaries)) };
  console.log(`boundary benchmark: ${boundaries}`);
}
writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
console.log(`prebuilt ${plans.length} libraries, ${KERNEL_CASES.length} kernel checks${manifest.boundaries ? ' and the boundary benchmark' : ''} for ${archs.join(',')} in ${((performance.now() - started) / 1000).toFixed(0)} s`);
