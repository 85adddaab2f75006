import type { WireEntry } from '../../protocols/registry/wire.ts'
import type { Database } from '../store/db.ts'

/** Where the registry keeps its entries between restarts. */
export interface RegistryStore {
  load(): Promise<WireEntry[]>
  put(entries: WireEntry[]): Promise<void>
}

/** Entries in a `registry` sublevel, keyed by registry key. */
export class LevelRegistryStore implements RegistryStore {
  readonly #db

  constructor (db: Database) {
    this.#db = db.sublevel<string, WireEntry>('registry', { valueEncoding: 'json' })
  }

  async load (): Promise<WireEntry[]> {
    return await this.#db.values().all()
  }

  async put (entries: WireEntry[]): Promise<void> {
    if (entries.length === 0) return
    await this.#db.batch(entries.map(e => ({ type: 'put' as const, key: e.k, value: e })))
  }
}

/** For tests and tools that need no persistence. */
export class MemoryRegistryStore implements RegistryStore {
  readonly entries = new Map<string, WireEntry>()

  async load (): Promise<WireEntry[]> {
    return [...this.entries.values()]
  }

  async put (entries: WireEntry[]): Promise<void> {
    for (const e of entries) this.entries.set(e.k, e)
  }
}
