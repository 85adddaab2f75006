import type { WireEntry } from '../../protocols/registry/wire.ts'
import type { Database } from '../store/db.ts'

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

/** Entries in a `registry` sublevel, keyed by registry key. */
export class LevelRegistryStore implements RegistryStore {
  readonly #db

  constructor (db: Database) {
    this.#db = db.sublevel<string, WireEntry>('registry', { valueEncoding: 'json' })
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
    if (entries.length === 0) return
    await this.#db.batch(entries.map(e => ({ type: 'put' as const, key: e.k, value: e })))
  }

  async delete (keys: string[]): Promise<void> {
    if (keys.length === 0) return
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
