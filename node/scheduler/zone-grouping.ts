import { groupByZone } from './zone-view.ts'
import type { ZoneMember } from './leader.ts'
import type { Member } from '../membership/membership.ts'

/**
 * What the election reads of the fleet's members on each check, kept
 * between checks:
 * - the members grouped by zone, regrouped only when membership hands out a
 *   new list (it builds one at most once a second and at once on any state
 *   change; between builds it returns the same member objects). At
 *   N = 5000 regrouping on each of the four checks a second was a tenth of
 *   the agent's main thread;
 * - which zones' summary-named schedulers may have changed since they were
 *   last read: a zone's summary, one of its fleet-wide endorsements, or one
 *   of its members' state. Reading every zone's summaries and endorsements
 *   on any such change was another tenth at N = 5000 (25 zones).
 */
export class ZoneGrouping {
  #members: readonly Member[] = []
  #byZone = new Map<string, ZoneMember[]>()
  #zoneOf = new Map<string, string>()
  #dirty = new Set<string>()
  #allDirty = true

  /** `members` grouped by zone (the previous grouping while they are the same member objects). */
  of (members: readonly Member[]): Map<string, ZoneMember[]> {
    if (sameMembers(members, this.#members)) return this.#byZone
    this.#members = members
    this.#byZone = groupByZone(members)
    this.#zoneOf = new Map()
    for (const [zone, list] of this.#byZone) for (const m of list) this.#zoneOf.set(m.peerId, zone)
    return this.#byZone
  }

  /** A `<prefix>/<zone>/<writer>` key changed (a zone summary or a fleet-wide endorsement). */
  keyChanged (key: string): void {
    const zone = key.split('/')[1]
    if (zone == null || zone === '') this.#allDirty = true
    else this.#dirty.add(zone)
  }

  /** A member changed state: its zone, or every zone for a member not grouped yet. */
  memberChanged (peerId: string): void {
    const zone = this.#zoneOf.get(peerId)
    if (zone == null) this.#allDirty = true
    else this.#dirty.add(zone)
  }

  /** Every zone is to be read again (the periodic recheck). */
  allChanged (): void {
    this.#allDirty = true
  }

  /** The zones to read again now (`'all'`, or a set), forgotten once taken. */
  take (): ReadonlySet<string> | 'all' {
    const out = this.#allDirty ? 'all' : this.#dirty
    this.#allDirty = false
    this.#dirty = new Set()
    return out
  }
}

function sameMembers (a: readonly Member[], b: readonly Member[]): boolean {
  if (a.length !== b.length || a.length === 0) return false
  // membership hands out one array until it rebuilds it: no need to compare 5000 members with themselves
  if (a === b) return true
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}
