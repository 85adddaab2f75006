import type { Database } from '../store/db.ts'

/** Where our incarnation survives restarts. */
export interface IncarnationStore {
  load(): Promise<number | undefined>
  save(inc: number): Promise<void>
}

const KEY = 'membership:incarnation'

/** Our incarnation in the agent's database. */
export function levelIncarnationStore (db: Pick<Database, 'get' | 'put'>): IncarnationStore {
  return {
    load: async () => {
      const v = await db.get(KEY)
      return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : undefined
    },
    save: async inc => { await db.put(KEY, inc) }
  }
}

/** Past any incarnation of an earlier run: the saved one plus one, and never below the wall clock's seconds. */
export function firstIncarnation (saved: number | undefined, now = Date.now()): number {
  return Math.max(saved == null ? 0 : saved + 1, Math.floor(now / 1000))
}
