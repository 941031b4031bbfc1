import { isDeepStrictEqual } from 'node:util';
import { PlanError, showValue } from '../errors.js';
import { buildPlan } from './build-plan.js';
import type { Plan } from './types.js';

/**
 * A plan is plain data (plan --json prints it, the API takes it back): before one is rendered, it
 * must be exactly what buildPlan makes of its own model and options, so that an edited or hand-made
 * plan cannot put an unchecked number (or name) into generated code. Key order is free, as in JSON.
 */
export function checkPlan(plan: Plan): void {
  const p = plan as unknown as Record<string, unknown> | null;
  if (typeof p !== 'object' || p === null || typeof p.model !== 'object' || p.model === null || typeof p.options !== 'object' || p.options === null) {
    throw new PlanError('plan', undefined, 'has no model or options', 'pass a plan made by buildPlan (or printed by plan --json)');
  }
  const fresh = buildPlan(plan.model, plan.options);  // checks the model and the options themselves
  const difference = firstDifference(JSON.parse(JSON.stringify(fresh)), JSON.parse(JSON.stringify(plan)), 'plan');
  if (difference !== undefined) {
    throw new PlanError('plan', difference.path, `is ${showValue(difference.given)} where buildPlan gives ${showValue(difference.expected)} for this model and these options`,
      'pass a plan made by buildPlan (or printed by plan --json) unchanged; change the config or the options instead');
  }
}

/** The first path where two JSON values differ (objects compared key by key, in any order). */
function firstDifference(expected: unknown, given: unknown, path: string): { path: string; expected: unknown; given: unknown } | undefined {
  if (isDeepStrictEqual(expected, given)) return undefined;
  if (typeof expected === 'object' && expected !== null && typeof given === 'object' && given !== null && Array.isArray(expected) === Array.isArray(given)) {
    const e = expected as Record<string, unknown>, g = given as Record<string, unknown>;
    for (const key of new Set([...Object.keys(e), ...Object.keys(g)])) {
      const found = firstDifference(e[key], g[key], Array.isArray(expected) ? `${path}[${key}]` : `${path}.${key}`);
      if (found !== undefined) return found;
    }
  }
  return { path, expected, given };
}
