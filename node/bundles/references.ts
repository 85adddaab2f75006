import type { BundleRecord } from './store.ts'

/**
 * Digests that some deployment in the registry refers to; the store never
 * evicts these. A deployment names its model by digest or by name and
 * version (ARCHITECTURE.md, "a model (name and version or digest)"); both
 * spellings are accepted at the top level of the value or under `spec`.
 * Rollouts are passed in the same list: the releases they name are kept too.
 */
export function referencedDigests (deployments: Array<{ value: unknown }>, records: BundleRecord[]): Set<string> {
  const refs = new Set<string>()
  const byName = new Map<string, string[]>()
  for (const r of records) {
    if (r.name == null) continue
    const key = `${r.name}@${r.version ?? ''}`
    byName.set(key, [...(byName.get(key) ?? []), r.digest])
  }
  for (const { value } of deployments) {
    const v = value as Record<string, any> | undefined
    for (const spec of [v, v?.spec]) {
      if (spec == null || typeof spec !== 'object') continue
      for (const d of [spec.digest, spec.bundle, spec.model?.digest, spec.model?.bundle]) {
        if (typeof d === 'string') refs.add(d)
      }
      // a rollout (rollout/<id>) names a release bundle per architecture
      if (Array.isArray(spec.releases)) {
        for (const r of spec.releases.slice(0, 8)) if (typeof r?.digest === 'string') refs.add(r.digest)
      }
      if (typeof spec.model?.name === 'string') {
        for (const d of byName.get(`${String(spec.model.name)}@${String(spec.model.version ?? '')}`) ?? []) refs.add(d)
      }
    }
  }
  return refs
}
