import semver from 'semver'
import { readReleaseManifest } from '../../packaging/release/verify.ts'
import type { Registry } from '../../node/registry/registry.ts'

/** A release bundle some node of the mesh advertises complete. */
export interface MeshRelease {
  digest: string
  version: string
  size: number
  /** how many nodes advertise it complete */
  holders: number
  /** from its manifest, once the coordinator's own agent holds it (nothing a peer says is taken for it) */
  arch?: string
  createdAt?: string
}

/** Most releases listed: the newest versions first. @default 500 */
export const MAX_LISTED_RELEASES = 500

const DIGEST_RE = /^[0-9a-f]{64}$/

export interface MeshReleasesComponents {
  registry: Pick<Registry, 'list'>
  /** where the coordinator's agent keeps a complete bundle; throws when it does not hold it */
  pathOf(digest: string): string
}

/**
 * The release bundles the mesh holds, from the `bundle/<digest>/<peer>`
 * adverts every holder writes of itself. An advert is a peer's word: its
 * version and size are only shown (bounded here), never trusted; what the
 * coordinator writes into a rollout it reads from a bundle it pulled and
 * verified itself (CoordinatorRollouts). Architecture and build time come
 * from the manifest of a bundle the coordinator holds, read once per
 * digest (a digest's bytes never change).
 */
export class MeshReleases {
  readonly #c: MeshReleasesComponents
  readonly #manifests = new Map<string, { arch: string, createdAt: string } | null>()

  constructor (components: MeshReleasesComponents) {
    this.#c = components
  }

  async list (): Promise<MeshRelease[]> {
    const byDigest = new Map<string, MeshRelease>()
    for (const e of this.#c.registry.list<{ complete?: unknown, kind?: unknown, version?: unknown, size?: unknown }>('bundle/')) {
      const v = e.value
      if (v == null || v.kind !== 'release' || v.complete !== true) continue
      const digest = e.key.split('/')[1] ?? ''
      if (!DIGEST_RE.test(digest)) continue
      const seen = byDigest.get(digest)
      if (seen != null) {
        seen.holders++
        continue
      }
      const version = typeof v.version === 'string' ? v.version.slice(0, 64) : '?'
      const size = typeof v.size === 'number' && Number.isSafeInteger(v.size) && v.size >= 0 ? v.size : 0
      byDigest.set(digest, { digest, version, size, holders: 1 })
    }
    const newest = [...byDigest.values()].sort((a, b) => {
      const x = semver.valid(a.version)
      const y = semver.valid(b.version)
      if (x != null && y != null && x !== y) return semver.rcompare(x, y)
      if ((x == null) !== (y == null)) return x == null ? 1 : -1
      return a.version < b.version ? 1 : a.version > b.version ? -1 : a.digest < b.digest ? -1 : 1
    }).slice(0, MAX_LISTED_RELEASES)
    for (const r of newest) {
      const m = await this.#manifest(r.digest)
      if (m != null) Object.assign(r, m)
    }
    return newest
  }

  async #manifest (digest: string): Promise<{ arch: string, createdAt: string } | undefined> {
    const known = this.#manifests.get(digest)
    if (known !== undefined) return known ?? undefined
    let path: string
    try {
      path = this.#c.pathOf(digest)
    } catch {
      // not held here (yet): asked again next time
      return undefined
    }
    const m = await readReleaseManifest(path).then(m => ({ arch: m.arch, createdAt: m.createdAt }), () => null)
    if (this.#manifests.size >= MAX_LISTED_RELEASES * 2) this.#manifests.clear()
    this.#manifests.set(digest, m)
    return m ?? undefined
  }
}
