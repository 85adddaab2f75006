import { createHash } from 'node:crypto'
import { Type, type Static } from '@sinclair/typebox'
import { JsonCodec } from '../codec.ts'
import { ProtocolMessageError } from '../errors.ts'
import { MemberRecordSchema, type MemberRecord } from '../swim/wire.ts'
import { messageChannel, timeoutSignal } from '../stream.ts'
import type { Stream } from '@libp2p/interface'

/**
 * Push-pull: two members reconcile the member records they hold, so a
 * joining node learns the whole membership at once and two halves of a
 * healed partition learn what each said about the other (and refute it).
 * The initiator sends one digest per bucket of members; the responder
 * answers with the buckets that differ and its records in them; the
 * initiator sends its own records in those buckets. Two members that agree
 * exchange ~1.3 KB whatever the fleet's size.
 */
export const SWIM_SYNC_PROTOCOL = '/gatemesh/swim-sync/1.0.0'

export const SYNC_BUCKETS = 64
/** Most records one side may send: a zone's worth of members with room to spare. */
export const MAX_SYNC_RECORDS = 8192
export const DEFAULT_PUSH_PULL_TIMEOUT_MS = 10_000

const Records = Type.Array(MemberRecordSchema, { maxItems: MAX_SYNC_RECORDS })

export const SwimSyncMessageSchema = Type.Union([
  Type.Object({
    t: Type.Literal('digest'),
    buckets: Type.Array(Type.String({ pattern: '^[0-9a-f]{16}$' }), { minItems: SYNC_BUCKETS, maxItems: SYNC_BUCKETS })
  }, { additionalProperties: false }),
  Type.Object({
    t: Type.Literal('diff'),
    buckets: Type.Array(Type.Integer({ minimum: 0, maximum: SYNC_BUCKETS - 1 }), { maxItems: SYNC_BUCKETS, uniqueItems: true }),
    records: Records
  }, { additionalProperties: false }),
  Type.Object({
    t: Type.Literal('records'),
    records: Records
  }, { additionalProperties: false })
])

export type SwimSyncMessage = Static<typeof SwimSyncMessageSchema>

export const swimSyncCodec = new JsonCodec({ name: 'swim-sync', version: 1, schema: SwimSyncMessageSchema, maxBytes: 8 * 1024 * 1024 })

export function bucketOf (id: string): number {
  return createHash('sha256').update(id).digest()[0]! % SYNC_BUCKETS
}

/** What a record says, for comparison: who, which incarnation, and alive, suspect or dead. */
function claimOf (r: MemberRecord): string {
  return `${r.id}:${r.inc}:${r.acc?.k ?? 'a'}`
}

/** One hash per bucket over the claims in it. */
export function digest (records: readonly MemberRecord[]): string[] {
  const claims: string[][] = Array.from({ length: SYNC_BUCKETS }, () => [])
  for (const r of records) claims[bucketOf(r.id)]!.push(claimOf(r))
  return claims.map(c => createHash('sha256').update(c.sort().join('\n')).digest('hex').slice(0, 16))
}

function inBuckets (records: readonly MemberRecord[], buckets: readonly number[]): MemberRecord[] {
  const wanted = new Set(buckets)
  return records.filter(r => wanted.has(bucketOf(r.id))).slice(0, MAX_SYNC_RECORDS)
}

export interface PushPullOptions {
  /** @default DEFAULT_PUSH_PULL_TIMEOUT_MS */
  timeoutMs?: number
  signal?: AbortSignal
  /** told the size of every message sent and received (its JSON text), for accounting */
  onBytes?: (direction: 'in' | 'out', bytes: number) => void
}

const size = (m: SwimSyncMessage): number => JSON.stringify(m).length + 1

/** Initiator: returns the peer's records where we differ (and sends ours there). */
export async function pushPull (stream: Stream, records: readonly MemberRecord[], options: PushPullOptions = {}): Promise<MemberRecord[]> {
  const signal = timeoutSignal(options.timeoutMs ?? DEFAULT_PUSH_PULL_TIMEOUT_MS, options.signal)
  const channel = messageChannel(stream, swimSyncCodec)
  const count = options.onBytes ?? (() => {})
  try {
    const first: SwimSyncMessage = { t: 'digest', buckets: digest(records) }
    await channel.write(first, { signal })
    count('out', size(first))
    const diff = await channel.read({ signal })
    count('in', size(diff))
    if (diff.t !== 'diff') throw new ProtocolMessageError(`swim-sync: expected diff, got ${diff.t}`)
    const mine: SwimSyncMessage = { t: 'records', records: inBuckets(records, diff.buckets) }
    await channel.write(mine, { signal })
    count('out', size(mine))
    await channel.close({ signal })
    return diff.records
  } catch (err: any) {
    stream.abort(err)
    throw err
  }
}

/** Responder: answers with our records where we differ; returns the initiator's records there. */
export async function answerPushPull (stream: Stream, records: () => readonly MemberRecord[], options: PushPullOptions = {}): Promise<MemberRecord[]> {
  const signal = timeoutSignal(options.timeoutMs ?? DEFAULT_PUSH_PULL_TIMEOUT_MS, options.signal)
  const channel = messageChannel(stream, swimSyncCodec)
  const count = options.onBytes ?? (() => {})
  try {
    const first = await channel.read({ signal })
    count('in', size(first))
    if (first.t !== 'digest') throw new ProtocolMessageError(`swim-sync: expected digest, got ${first.t}`)
    const ours = records()
    const mine = digest(ours)
    const differing = mine.flatMap((d, i) => d === first.buckets[i] ? [] : [i])
    const diff: SwimSyncMessage = { t: 'diff', buckets: differing, records: inBuckets(ours, differing) }
    await channel.write(diff, { signal })
    count('out', size(diff))
    const theirs = await channel.read({ signal })
    count('in', size(theirs))
    if (theirs.t !== 'records') throw new ProtocolMessageError(`swim-sync: expected records, got ${theirs.t}`)
    await channel.close({ signal })
    return theirs.records
  } catch (err: any) {
    stream.abort(err)
    throw err
  }
}
