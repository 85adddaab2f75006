import { REVOKED_PREFIX, revokedPeerOf } from '../../protocols/registry/revocation.ts'
import { authorityFor, type OwnershipRule } from './acl.ts'
import { compareTimestamps } from './hlc.ts'
import { checkStoredEntry } from './ingress.ts'
import { entryCost, type WriterQuotas } from './quota.ts'
import type { WireEntry } from '../../protocols/registry/wire.ts'

export interface HealInit {
  now: number
  maxDriftMs: number
  rules: readonly OwnershipRule[]
  quotas: Pick<WriterQuotas, 'maxKeys' | 'maxBytes'>
  /** this node's peer id */
  self: string
  /** past the retention */
  expired(e: WireEntry): boolean
}

export interface Healed {
  /** entries fit to restore, revocations first */
  entries: WireEntry[]
  /** peers the fleet revoked, from `revoked/` entries */
  revoked: string[]
  /** keys to delete from disk, with why */
  dropped: Array<{ key: string, reason: string }>
}

/** Node records and heartbeats first: when a writer is over quota, what is dropped is the rest. */
function priority (key: string): number {
  return key.startsWith('node/') ? 0 : key.startsWith('health/') ? 1 : 2
}

/**
 * What of the disk may be restored. Every entry is checked as if it came
 * from a peer today, bar the signature (the disk is this node's own):
 * schema and value bounds (an older version may have stored a timestamp
 * past the schema, or a value nested without limit), the drift limit,
 * ownership, revocations, the retention (bar this node's own live
 * entries, which it writes again at start) and each writer's quota. Whatever fails is
 * dropped, so a node poisoned on disk heals itself at start; a dropped
 * entry of a live peer comes back through anti-entropy once it is valid.
 */
export function healStoredEntries (stored: Array<[string, unknown]>, init: HealInit): Healed {
  const dropped: Healed['dropped'] = []
  const valid: WireEntry[] = []
  for (const [key, raw] of stored) {
    let e: WireEntry
    try {
      e = checkStoredEntry(raw)
    } catch {
      dropped.push({ key, reason: 'invalid' })
      continue
    }
    if (e.k !== key) {
      dropped.push({ key, reason: 'invalid' })
      continue
    }
    if (e.t[0] > init.now + init.maxDriftMs) {
      dropped.push({ key, reason: 'future' })
      continue
    }
    // this node's own live entries outlast its downtime: it writes them again at start
    if (init.expired(e) && (e.w !== init.self || e.v == null)) {
      dropped.push({ key, reason: 'expired' })
      continue
    }
    const authority = authorityFor(e.k, init.rules)
    if ((authority.kind === 'owner' && authority.owner !== e.w) || (authority.kind === 'fleet' && e.a == null)) {
      dropped.push({ key, reason: 'unauthorized' })
      continue
    }
    valid.push(e)
  }

  const revoked = new Set(valid.flatMap(e => revokedPeerOf(e.k) ?? []))
  const usage = new Map<string, { keys: number, bytes: number }>()
  const entries: WireEntry[] = []
  valid.sort((a, b) => (a.k.startsWith(REVOKED_PREFIX) ? 0 : 1) - (b.k.startsWith(REVOKED_PREFIX) ? 0 : 1) ||
    priority(a.k) - priority(b.k) || compareTimestamps(a.t, b.t))
  for (const e of valid) {
    if (!e.k.startsWith(REVOKED_PREFIX) && revoked.has(e.w)) {
      dropped.push({ key: e.k, reason: 'revoked' })
      continue
    }
    const authority = authorityFor(e.k, init.rules)
    if (authority.kind === 'owner') {
      const u = usage.get(e.w) ?? { keys: 0, bytes: 0 }
      const isLive = e.v == null ? 0 : 1
      if (u.keys + isLive > init.quotas.maxKeys || u.bytes + entryCost(e) > init.quotas.maxBytes) {
        dropped.push({ key: e.k, reason: 'quota' })
        continue
      }
      u.keys += isLive
      u.bytes += entryCost(e)
      usage.set(e.w, u)
    }
    entries.push(e)
  }
  return { entries, revoked: [...revoked], dropped }
}
