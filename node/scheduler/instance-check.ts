import { InstanceSpecError } from '../runtime/errors.ts'
import { parseInstanceSpec } from '../runtime/spec.ts'

const FIELDS = new Set(['name', 'input', 'batch', 'workers', 'rules'])

/**
 * Check a deployment's `instance` part: overrides of the bundle's
 * `config.json`, so each part present must be valid on its own, except an
 * `input` that only swaps sensors while the bundle keeps its window.
 */
export function validateInstanceOverrides (instance: unknown, root: string): void {
  if (instance == null || typeof instance !== 'object' || Array.isArray(instance)) throw new InstanceSpecError(`${root}: must be an object`, root)
  for (const key of Object.keys(instance)) {
    if (!FIELDS.has(key)) throw new InstanceSpecError(`${root}.${key}: is not an allowed field`, `${root}.${key}`)
  }
  const { input, ...rest } = instance as Record<string, unknown>
  parseInstanceSpec(rest, root)
  if (input == null) return
  const window = (input as { window?: unknown }).window
  // a sensors-only override is completed by the bundle's own window at start
  parseInstanceSpec({ input: window == null ? { ...input, window: { size: 1 } } : input }, root)
}
