import type { MemberRecord } from '../../protocols/swim/wire.ts'

interface Queued {
  record: MemberRecord
  bytes: number
  transmits: number
  /** insertion order; newer changes go first among equal transmit counts */
  order: number
}

/**
 * Membership changes waiting to be piggybacked (memberlist's
 * TransmitLimitedQueue). One entry per member: a newer record about the
 * same member replaces the older one, so a change is sent only while it is
 * news. Each record goes out at most `limit()` times (λ·log N), fewest
 * transmissions first, so a quiet mesh sends nothing but probes.
 */
export class BroadcastQueue {
  readonly #queue = new Map<string, Queued>()
  readonly #limit: () => number
  #order = 0

  constructor (limit: () => number) {
    this.#limit = limit
  }

  get size (): number {
    return this.#queue.size
  }

  /** Queue (or replace) the record about `record.id`. */
  push (record: MemberRecord): void {
    this.#queue.set(record.id, { record, bytes: JSON.stringify(record).length, transmits: 0, order: ++this.#order })
  }

  /** Forget what is queued about `id`. */
  drop (id: string): void {
    this.#queue.delete(id)
  }

  /**
   * Up to `maxItems` records within `budgetBytes`, counted as sent once
   * each; records about `skip` are left out (the receiver gets its own
   * news another way).
   */
  take (maxItems: number, budgetBytes: number, skip?: string): MemberRecord[] {
    if (this.#queue.size === 0 || maxItems <= 0) return []
    const limit = Math.max(1, this.#limit())
    const ordered = [...this.#queue.values()].sort((a, b) => a.transmits - b.transmits || b.order - a.order)
    const out: MemberRecord[] = []
    let bytes = 0
    for (const q of ordered) {
      if (out.length >= maxItems) break
      if (q.record.id === skip) continue
      if (bytes + q.bytes > budgetBytes) continue
      out.push(q.record)
      bytes += q.bytes
      q.transmits++
      if (q.transmits >= limit) this.#queue.delete(q.record.id)
    }
    return out
  }
}
