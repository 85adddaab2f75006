import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { readReleaseInfo } from '../../packaging/release/install.ts'
import { asReleaseRecord, type ReleaseRecord } from './record.ts'
import { parseRolloutSpec, releaseKey, type RolloutSpec } from './rollout.ts'
import { newestFirst, type FleetNode } from './waves.ts'
import type { Member } from '../membership/membership.ts'
import type { Registry } from '../registry/registry.ts'
import type { Logger } from 'pino'

export interface FleetSources {
  peerId: string
  registry: Pick<Registry, 'list' | 'value'>
  members(): readonly Member[]
  /** a peer's certificate claims, the only source of its role and labels */
  claimsOf(peer: string): { role: string, labels: Record<string, string> } | undefined
}

/**
 * Every node as the rollout logic sees it: role and labels from its
 * certificate, the release record it wrote (ours, as we hold it), and its
 * liveness as this node's membership judges it, with how long that has
 * held (for a node membership does not know, since this node started).
 * Members whose node record has not reached us yet are in it too.
 */
export function readFleet (c: FleetSources, self: ReleaseRecord | undefined, now: number): FleetNode[] {
  const members = new Map(c.members().filter(m => m.peerId !== c.peerId).map(m => [m.peerId, m]))
  const looking = self?.startedAt ?? now
  const node = (peer: string, role: string | undefined): FleetNode => {
    const claims = c.claimsOf(peer)
    const record = peer === c.peerId ? self : asReleaseRecord(c.registry.value(releaseKey(peer)))
    const member = members.get(peer)
    return {
      peer,
      role: claims?.role ?? role ?? 'gateway',
      labels: claims?.labels ?? {},
      ...(record == null ? {} : { record }),
      liveness: peer === c.peerId ? 'alive' : member?.state ?? 'unknown',
      livenessForMs: Math.max(0, now - (peer === c.peerId ? looking : member?.since ?? looking))
    }
  }
  const nodes: FleetNode[] = []
  const listed = new Set<string>()
  for (const e of c.registry.list<{ role?: unknown }>('node/')) {
    const peer = e.key.slice('node/'.length)
    if (peer === '' || peer.includes('/')) continue
    listed.add(peer)
    nodes.push(node(peer, typeof e.value?.role === 'string' ? e.value.role : undefined))
  }
  for (const m of members.values()) if (!listed.has(m.peerId)) nodes.push(node(m.peerId, m.role))
  return nodes
}

/** Every valid rollout record, newest first; invalid ones (which the registry's signature check let through) are skipped. */
export function readRollouts (registry: Pick<Registry, 'list'>, log: Logger): RolloutSpec[] {
  const out: RolloutSpec[] = []
  for (const e of registry.list('rollout/')) {
    try {
      out.push(parseRolloutSpec(e.value))
    } catch (err: any) {
      log.debug({ key: e.key, err: err.message }, 'ignoring an invalid rollout record')
    }
  }
  return newestFirst(out)
}

/** The releases installed in `releasesDir` (its version directories; links and runtimes aside). */
export async function installedReleases (releasesDir: string): Promise<Array<{ version: string, digest: string | null, node: string, origin: string }>> {
  const out = []
  for (const name of await readdir(releasesDir).catch(() => [] as string[])) {
    if (!/^[0-9]/.test(name)) continue
    const info = await readReleaseInfo(join(releasesDir, name))
    if (info != null) out.push({ version: info.version, digest: info.digest, node: info.node, origin: info.origin })
  }
  return out
}
