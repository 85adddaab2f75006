import type { Leader } from './leader.ts'
import type { Database } from '../store/db.ts'

/** What a node remembers about one zone's schedulers across restarts. */
export interface ZoneMemory {
  /** highest term this node has followed; its own claims go above it, peers' claims may not go far above it */
  floor: number
  /** schedulers it followed, newest first: their placements stand in until the current one writes its own */
  followed: Leader[]
}

export interface TermStore {
  load(): Promise<Map<string, ZoneMemory>>
  save(zone: string, memory: ZoneMemory): Promise<void>
}

/** Schedulers remembered per zone. A few are enough to bridge a hand-over. */
export const MAX_FOLLOWED = 8

/** A memory read back from disk, checked field by field: the disk is input too. */
function parseMemory (value: unknown): ZoneMemory | undefined {
  if (value == null || typeof value !== 'object') return undefined
  const { floor, followed } = value as Record<string, unknown>
  if (!Number.isSafeInteger(floor) || (floor as number) < 0 || !Array.isArray(followed)) return undefined
  const leaders = followed.slice(0, MAX_FOLLOWED).flatMap(l => {
    const { peerId, term } = (l ?? {}) as Record<string, unknown>
    return typeof peerId === 'string' && peerId.length <= 128 && Number.isSafeInteger(term) ? [{ peerId, term: term as number }] : []
  })
  return { floor: floor as number, followed: leaders }
}

/** Zone memories in the node's level database (`election` sublevel). */
export class LevelTermStore implements TermStore {
  readonly #db

  constructor (db: Database) {
    this.#db = db.sublevel<string, unknown>('election', { valueEncoding: 'json' })
  }

  async load (): Promise<Map<string, ZoneMemory>> {
    const out = new Map<string, ZoneMemory>()
    for await (const [zone, value] of this.#db.iterator()) {
      const memory = parseMemory(value)
      if (memory != null) out.set(zone, memory)
    }
    return out
  }

  async save (zone: string, memory: ZoneMemory): Promise<void> {
    await this.#db.put(zone, memory)
  }
}

/** For tests, and for a node without a database. */
export class MemoryTermStore implements TermStore {
  readonly saved = new Map<string, ZoneMemory>()

  async load (): Promise<Map<string, ZoneMemory>> {
    return new Map([...this.saved].map(([z, m]) => [z, { floor: m.floor, followed: [...m.followed] }]))
  }

  async save (zone: string, memory: ZoneMemory): Promise<void> {
    this.saved.set(zone, { floor: memory.floor, followed: [...memory.followed] })
  }
}

/** The memory after following `leader`: floor raised, leader first in the list. */
export function remember (memory: ZoneMemory, leader: Leader): ZoneMemory {
  const followed = [leader, ...memory.followed.filter(l => l.peerId !== leader.peerId || l.term !== leader.term)].slice(0, MAX_FOLLOWED)
  return { floor: Math.max(memory.floor, leader.term), followed }
}
