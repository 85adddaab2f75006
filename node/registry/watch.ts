import type { RegistryEntry } from './entry.ts'

/** One change of one key, as `watch()` and `onChange()` report it. */
export interface RegistryChange<T = unknown> {
  key: string
  entry: RegistryEntry<T>
  previous?: RegistryEntry<T>
  /**
   * how the change arrived: this agent wrote it, live gossip, anti-entropy,
   * its writer was revoked, it outlived the retention, or its writer's zone
   * is not one this node follows (for the last three the key vanished)
   */
  via: 'local' | 'gossip' | 'sync' | 'revocation' | 'expiry' | 'zone'
}

export type ChangeListener = (change: RegistryChange) => void

/** An async iterator over changes under a prefix; `close()` ends it. */
export interface RegistryWatch extends AsyncIterableIterator<RegistryChange> {
  close(): void
}

/**
 * Fans changes out to listeners by key prefix. Each watch buffers changes
 * until its consumer pulls them, so a slow consumer never blocks a merge.
 */
export class ChangeFeed {
  readonly #listeners = new Set<{ prefix: string, fn: ChangeListener }>()

  emit (change: RegistryChange): void {
    for (const l of this.#listeners) {
      if (change.key.startsWith(l.prefix)) l.fn(change)
    }
  }

  onChange (prefix: string, fn: ChangeListener): () => void {
    const listener = { prefix, fn }
    this.#listeners.add(listener)
    return () => { this.#listeners.delete(listener) }
  }

  watch (prefix: string, signal?: AbortSignal): RegistryWatch {
    const buffered: RegistryChange[] = []
    let wake: (() => void) | undefined
    let closed = false
    const off = this.onChange(prefix, change => {
      buffered.push(change)
      wake?.()
    })
    const close = (): void => {
      closed = true
      off()
      wake?.()
    }
    signal?.addEventListener('abort', close, { once: true })
    const it: RegistryWatch = {
      async next () {
        while (buffered.length === 0 && !closed) {
          await new Promise<void>(resolve => { wake = resolve })
          wake = undefined
        }
        const value = buffered.shift()
        return value == null ? { done: true, value: undefined } : { done: false, value }
      },
      async return () {
        close()
        return { done: true, value: undefined }
      },
      close,
      [Symbol.asyncIterator] () { return it }
    }
    return it
  }
}
