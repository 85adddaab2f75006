import type { DeploymentSpec } from './spec.ts'
import type { Registry } from '../registry/registry.ts'

interface Advert { complete?: boolean, name?: string, version?: string }

/**
 * The bundle digest a deployment's model reference resolves to: the digest
 * itself, or the complete bundle advertised under that name and version.
 * Should two different bundles claim one name and version, the one with the
 * most holders wins, then the smaller digest, so every scheduler agrees.
 */
export function resolveBundle (registry: Pick<Registry, 'list'>, model: DeploymentSpec['model']): string | undefined {
  if (model.digest != null) return model.digest
  const holders = new Map<string, number>()
  for (const e of registry.list<Advert>('bundle/')) {
    const [, digest] = e.key.split('/')
    if (digest == null || e.value?.complete !== true || e.value.name !== model.name || e.value.version !== model.version) continue
    holders.set(digest, (holders.get(digest) ?? 0) + 1)
  }
  return [...holders].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0]?.[0]
}

/** The version the complete bundle `digest` declares, from any holder's advert. */
export function bundleVersion (registry: Pick<Registry, 'list'>, digest: string): string | undefined {
  for (const e of registry.list<Advert>(`bundle/${digest}`)) {
    if (e.key.split('/')[1] === digest && typeof e.value?.version === 'string') return e.value.version
  }
  return undefined
}
