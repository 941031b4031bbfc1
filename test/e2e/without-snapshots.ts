/**
 * The replay peer of the KV snapshots (runtime/model.ts): a loaded model whose native group answers
 * that it keeps no snapshots (kvBytes −1), as a library without mc_kv_* does, so that a generation
 * displaced by another call runs its whole sequence again. Used by test/e2e/sequences.test.ts and
 * bench/cpu/concurrent-generations.ts; no vitest here, so that the benchmark can import it.
 */
import type { LoadedModel } from '../../runtime/model.js';

export function withoutSnapshots(model: LoadedModel): void {
  const native = (model as unknown as { native: object }).native;
  const peer = new Proxy(native, {
    get: (target, key) => {
      if (key === 'kvBytes') return () => -1;
      const value: unknown = Reflect.get(target, key);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  Object.defineProperty(model, 'native', { value: peer });
}
