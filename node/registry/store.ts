import type { WireEntry } from '../../protocols/registry/wire.ts'
import { diskGuardOf, type Database } from '../store/db.ts'

/**
 * Where the registry keeps its entries between restarts. `load` hands back
 * what is on disk as it is, keyed by registry key: the registry checks every
 * entry again before trusting it (the disk may hold what an older version
 * accepted, or what a crash cut short).
 */
export interface RegistryStore {
  load(): Promise<Array<[key: string, raw: unknown]>>
  put(entries: WireEntry[]): Promise<void>
  delete(keys: string[]): Promise<void>
}

/**
 * Entries in a `registry` sublevel, keyed by registry key. An entry that
 * could not be written (the disk is full, say) waits in memory, the newest
 * per key (so at most one per registry key), and goes with the next write
 * or when the disk guard reports space again; the registry itself goes on
 * in memory meanwhile. Writes run one at a time, so an older entry for a
 * key never lands after a newer one.
 */
export class LevelRegistryStore implements RegistryStore {
  readonly #db
  readonly #held = new Map<string, WireEntry>()
  #writing: Promise<void> = Promise.resolve()

  constructor (db: Database) {
    this.#db = db.sublevel<string, WireEntry>('registry', { valueEncoding: 'json' })
    diskGuardOf(db)?.addEventListener('resume', () => { this.#flush().catch(() => {}) })
  }

  /** Entries waiting to be written. */
  get held (): number {
    return this.#held.size
  }

  async load (): Promise<Array<[string, unknown]>> {
    const out: Array<[string, unknown]> = []
    // read text and parse here: one corrupt value must not stop the whole load
    for await (const [key, text] of this.#db.iterator<string, string>({ valueEncoding: 'utf8' })) {
      let raw: unknown
      try {
        raw = JSON.parse(text)
      } catch {
        raw = undefined
      }
      out.push([key, raw])
    }
    return out
  }

  async put (entries: WireEntry[]): Promise<void> {
    // the registry hands over winners only, in the order it applied them: a later one for a key is newer
    for (const e of entries) this.#held.set(e.k, e)
    await this.#flush()
  }

  async #flush (): Promise<void> {
    const run = this.#writing.then(async () => { await this.#write() })
    this.#writing = run.catch(() => {})
    await run
  }

  async #write (): Promise<void> {
    if (this.#held.size === 0) return
    const entries = [...this.#held.values()]
    this.#held.clear()
    try {
      await this.#db.batch(entries.map(e => ({ type: 'put' as const, key: e.k, value: e })))
    } catch (err: any) {
      for (const e of entries) if (!this.#held.has(e.k)) this.#held.set(e.k, e)
      // a full disk was logged once by the guard; these are written when it has space again
      if (err?.code !== 'ERR_DISK_FULL') throw err
    }
  }

  async delete (keys: string[]): Promise<void> {
    if (keys.length === 0) return
    // an entry waiting for disk space must not land after its key was deleted
    for (const key of keys) this.#held.delete(key)
    await this.#db.batch(keys.map(key => ({ type: 'del' as const, key })))
  }
}

/** For tests and tools that need no persistence. */
export class MemoryRegistryStore implements RegistryStore {
  readonly entries = new Map<string, unknown>()

  async load (): Promise<Array<[string, unknown]>> {
    return [...this.entries]
  }

  async put (entries: WireEntry[]): Promise<void> {
    for (const e of entries) this.entries.set(e.k, e)
  }

  async delete (keys: string[]): Promise<void> {
    for (const k of keys) this.entries.delete(k)
  }
}
