/** What a pull reports, and the small helpers it uses. */
export type TransferState = 'resolving' | 'fetching' | 'verifying' | 'complete' | 'failed'

export interface ProviderStatus {
  peer: string
  complete: boolean
  state: 'connecting' | 'active' | 'failed' | 'banned'
  chunks: number
  bytes: number
  rateBps: number
  error?: string
}

export interface TransferStatus {
  digest: string
  state: TransferState
  size: number | null
  chunks: number | null
  chunksHave: number
  bytesHave: number
  rateBps: number
  /** chunks found verified on disk when this transfer (re)started */
  resumedChunks: number
  /** chunks fetched and verified by this transfer */
  fetchedChunks: number
  duplicateChunks: number
  corruptChunks: number
  providers: ProviderStatus[]
  startedAt: number
  finishedAt?: number
  error?: { code: string, message: string }
}

export interface TransferMetrics {
  corruptChunk(provider: string): void
  chunkFetched(bytes: number): void
}

/** Bytes per second over a sliding window. */
export class RateMeter {
  readonly #samples: Array<[number, number]> = []
  readonly #windowMs: number
  constructor (windowMs = 2000) { this.#windowMs = windowMs }
  add (bytes: number): void {
    const now = Date.now()
    this.#samples.push([now, bytes])
    while (this.#samples.length > 0 && this.#samples[0]![0] < now - this.#windowMs) this.#samples.shift()
  }

  get bps (): number {
    const now = Date.now()
    const recent = this.#samples.filter(([t]) => t >= now - this.#windowMs)
    if (recent.length === 0) return 0
    const span = Math.max(250, now - recent[0]![0])
    return Math.round(recent.reduce((s, [, b]) => s + b, 0) / span * 1000)
  }
}

export function shuffle<T> (list: T[]): T[] {
  for (let i = list.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[list[i], list[j]] = [list[j]!, list[i]!]
  }
  return list
}

export async function sleep (ms: number, signal: AbortSignal): Promise<void> {
  await new Promise<void>(resolve => {
    const t = setTimeout(resolve, ms)
    signal.addEventListener('abort', () => { clearTimeout(t); resolve() }, { once: true })
  })
}
