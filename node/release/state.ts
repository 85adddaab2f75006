import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { RELEASE_STATE_DIR } from '../../packaging/image/layout.ts'

/**
 * The files the agent shares with the image's loader in
 * `<data>/release/` (see packaging/image/loader.ts): `next` (the agent
 * staged a release), `pending` (the loader switched to it; the agent
 * removes it to confirm), `rollback` (the loader gave a release up, and
 * why), `health` (the agent's last health note, which the loader quotes).
 * All are `key=value` lines. Beside them, the agent's own: `handover.json`
 * (what ran before the restart, for the health check) and `history.json`.
 */
export const STATE_FILES = { next: 'next', pending: 'pending', rollback: 'rollback', health: 'health', handover: 'handover.json', history: 'history.json' } as const
const MAX_STATE_BYTES = 16 * 1024
const MAX_HISTORY = 20

export type KeyValues = Record<string, string>

/** What ran before a restart into a new release: the health check expects it back. */
export interface Handover {
  rollout: string
  version: string
  from: string
  /** model instances that were running, and the deployment that placed each */
  instances: Array<{ name: string, deployment?: string }>
  /** verified peers at the time: a node that had none is not asked to rejoin a mesh */
  peers: number
  at: number
}

/** One finished update, as this node saw it. */
export interface HistoryEntry {
  rollout: string
  from: string
  to: string
  result: 'healthy' | 'rolled-back' | 'failed' | 'skipped'
  detail?: string
  at: number
}

export class ReleaseStateDir {
  readonly dir: string

  constructor (dataDir: string) {
    this.dir = join(dataDir, RELEASE_STATE_DIR)
  }

  async ensure (): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 })
  }

  /** A key=value file, or undefined when absent; values are the loader's or ours, and bounded. */
  async read (name: 'next' | 'pending' | 'rollback' | 'health'): Promise<KeyValues | undefined> {
    const text = await this.#text(name)
    if (text == null) return undefined
    const out: KeyValues = {}
    for (const line of text.split('\n')) {
      const i = line.indexOf('=')
      if (i <= 0) continue
      const key = line.slice(0, i)
      if (!(key in out)) out[key] = line.slice(i + 1).slice(0, 600)
    }
    return out
  }

  async write (name: 'next' | 'health', values: KeyValues): Promise<void> {
    // one line per value: a newline in a value would forge another key
    const text = Object.entries(values).map(([k, v]) => `${k}=${v.replace(/[\r\n]+/g, ' ')}`).join('\n') + '\n'
    await this.#atomic(name, text)
  }

  async remove (name: 'next' | 'pending' | 'rollback' | 'health' | 'handover.json'): Promise<void> {
    await rm(join(this.dir, name), { force: true })
  }

  async readHandover (): Promise<Handover | undefined> {
    try {
      const h = JSON.parse(await this.#text(STATE_FILES.handover) ?? 'null') as Handover | null
      return h != null && typeof h.version === 'string' && Array.isArray(h.instances) ? h : undefined
    } catch {
      return undefined
    }
  }

  async writeHandover (h: Handover): Promise<void> {
    await this.#atomic(STATE_FILES.handover, JSON.stringify(h) + '\n')
  }

  async history (): Promise<HistoryEntry[]> {
    try {
      const list = JSON.parse(await this.#text(STATE_FILES.history) ?? '[]') as unknown
      return Array.isArray(list) ? list.slice(-MAX_HISTORY) as HistoryEntry[] : []
    } catch {
      return []
    }
  }

  async addHistory (entry: HistoryEntry): Promise<void> {
    const list = [...await this.history(), entry].slice(-MAX_HISTORY)
    await this.#atomic(STATE_FILES.history, JSON.stringify(list, null, 2) + '\n')
  }

  async #text (name: string): Promise<string | undefined> {
    try {
      const buf = await readFile(join(this.dir, name))
      return buf.subarray(0, MAX_STATE_BYTES).toString('utf8')
    } catch (err: any) {
      if (err.code === 'ENOENT') return undefined
      throw err
    }
  }

  async #atomic (name: string, text: string): Promise<void> {
    await this.ensure()
    const tmp = join(this.dir, `.${name}.${process.pid}.tmp`)
    await writeFile(tmp, text, { mode: 0o600 })
    await rename(tmp, join(this.dir, name))
  }
}
