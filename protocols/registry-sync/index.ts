import { createHash } from 'node:crypto'
import { Type } from '@sinclair/typebox'
import { JsonCodec } from '../codec.ts'
import { ProtocolMessageError } from '../errors.ts'
import { WireEntrySchema, type WireEntry } from '../registry/wire.ts'
import { messageChannel, timeoutSignal, type MessageChannel } from '../stream.ts'
import type { Stream } from '@libp2p/interface'

/**
 * Anti-entropy for the registry. The initiator sends one digest per key
 * bucket; the responder names the buckets that differ and sends its entries
 * in them; the initiator merges and sends back its own entries in the same
 * buckets; the responder merges them and acknowledges with `end`. When the
 * initiator's call returns, both sides hold the union of their state.
 */
export const SYNC_PROTOCOL = '/gatemesh/registry-sync/1.0.0'

export const BUCKETS = 64
export const DEFAULT_SYNC_TIMEOUT_MS = 30_000
/** Refuse a session that tries to push more entries than this. */
export const MAX_SYNC_ENTRIES = 200_000
const FRAME_BUDGET = 768 * 1024
const MAX_FRAME_ENTRIES = 256

export const SyncMessageSchema = Type.Union([
  Type.Object({
    type: Type.Literal('digest'),
    buckets: Type.Array(Type.String({ pattern: '^[0-9a-f]{16}$' }), { minItems: BUCKETS, maxItems: BUCKETS })
  }, { additionalProperties: false }),
  Type.Object({
    type: Type.Literal('diff'),
    buckets: Type.Array(Type.Integer({ minimum: 0, maximum: BUCKETS - 1 }), { maxItems: BUCKETS, uniqueItems: true })
  }, { additionalProperties: false }),
  Type.Object({
    type: Type.Literal('entries'),
    entries: Type.Array(WireEntrySchema, { minItems: 1, maxItems: MAX_FRAME_ENTRIES })
  }, { additionalProperties: false }),
  Type.Object({ type: Type.Literal('end') }, { additionalProperties: false })
])

export const syncCodec = new JsonCodec({ name: 'registry-sync', version: 1, schema: SyncMessageSchema, maxBytes: 1024 * 1024 })

/** The local replica as the sync protocol sees it. */
export interface SyncReplica {
  /** All entries, for bucketing. */
  entries(): Iterable<WireEntry>
  /** `digestBuckets(entries())`, which a replica may keep from round to round for the buckets that did not change. */
  digests?(): string[]
  /** Verify and merge entries a peer sent; invalid ones are dropped and counted, never thrown. */
  merge(entries: WireEntry[]): Promise<void>
}

export interface SyncOptions {
  /** @default DEFAULT_SYNC_TIMEOUT_MS */
  timeoutMs?: number
  signal?: AbortSignal
}

export interface SyncResult {
  /** Buckets that differed. */
  differing: number
  received: number
  sent: number
}

/** FNV-1a over the key: cheap and stable on every platform. */
export function bucketOf (key: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return (h >>> 0) % BUCKETS
}

/**
 * Keys left out of the digests: written often (health at least every
 * `membership.health.maxIntervalMs`) and spread by gossip, so some copy is
 * nearly always in flight; digesting them would make every bucket differ
 * every round and ship whole buckets for nothing. They still travel in any
 * bucket that differs for another reason (a joining peer's, say).
 */
export const VOLATILE_PREFIXES: readonly string[] = ['health/']

export const isVolatile = (key: string): boolean => VOLATILE_PREFIXES.some(p => key.startsWith(p))

/** What a bucket's digest covers of one (non-volatile) entry: key, timestamp, writer and signature. */
export const digestLine = (e: WireEntry): string => `${e.k}\u0000${e.t[0]}.${e.t[1]}\u0000${e.w}\u0000${e.s}`

/** The digest of one bucket from its entries' lines, in any order (they are sorted here). */
export function bucketDigest (lines: string[]): string {
  return createHash('sha256').update(lines.sort().join('\n')).digest('hex').slice(0, 16)
}

/** One digest per bucket over (key, timestamp, writer, signature) of the non-volatile entries, order independent. */
export function digestBuckets (entries: Iterable<WireEntry>): string[] {
  const lines: string[][] = Array.from({ length: BUCKETS }, () => [])
  for (const e of entries) if (!isVolatile(e.k)) lines[bucketOf(e.k)]!.push(digestLine(e))
  return lines.map(bucketDigest)
}

function * frames (entries: Iterable<WireEntry>, buckets: Set<number>): Generator<WireEntry[]> {
  let batch: WireEntry[] = []
  let size = 0
  for (const e of entries) {
    if (!buckets.has(bucketOf(e.k))) continue
    const s = e.k.length + (e.v?.length ?? 4) + (e.a?.length ?? 0) + e.s.length + e.w.length + 64
    if (batch.length > 0 && (size + s > FRAME_BUDGET || batch.length === MAX_FRAME_ENTRIES)) {
      yield batch
      batch = []
      size = 0
    }
    batch.push(e)
    size += s
  }
  if (batch.length > 0) yield batch
}

type Channel = MessageChannel<typeof SyncMessageSchema>

async function sendEntries (channel: Channel, entries: WireEntry[], buckets: Set<number>, signal: AbortSignal): Promise<number> {
  let sent = 0
  for (const batch of frames(entries, buckets)) {
    await channel.write({ type: 'entries', entries: batch }, { signal })
    sent += batch.length
  }
  await channel.write({ type: 'end' }, { signal })
  return sent
}

async function receiveEntries (channel: Channel, replica: SyncReplica, signal: AbortSignal): Promise<number> {
  let received = 0
  while (true) {
    const msg = await channel.read({ signal })
    if (msg.type === 'end') return received
    if (msg.type !== 'entries') throw new ProtocolMessageError(`registry-sync: expected entries, got ${msg.type}`)
    received += msg.entries.length
    if (received > MAX_SYNC_ENTRIES) throw new ProtocolMessageError('registry-sync: too many entries in one session')
    await replica.merge(msg.entries)
  }
}

/** Initiator side of one anti-entropy round. */
export async function syncWith (stream: Stream, replica: SyncReplica, options: SyncOptions = {}): Promise<SyncResult> {
  const signal = timeoutSignal(options.timeoutMs ?? DEFAULT_SYNC_TIMEOUT_MS, options.signal)
  const channel = messageChannel(stream, syncCodec)
  try {
    // Snapshot first: what we send back must not echo what the responder sends us.
    const snapshot = [...replica.entries()]
    await channel.write({ type: 'digest', buckets: replica.digests?.() ?? digestBuckets(snapshot) }, { signal })
    const diff = await channel.read({ signal })
    if (diff.type !== 'diff') throw new ProtocolMessageError(`registry-sync: expected diff, got ${diff.type}`)
    const received = await receiveEntries(channel, replica, signal)
    const sent = await sendEntries(channel, snapshot, new Set(diff.buckets), signal)
    const ack = await channel.read({ signal })
    if (ack.type !== 'end') throw new ProtocolMessageError(`registry-sync: expected end, got ${ack.type}`)
    await channel.close({ signal })
    return { differing: diff.buckets.length, received, sent }
  } catch (err: any) {
    stream.abort(err)
    throw err
  }
}

/** Responder side of one anti-entropy round. */
export async function answerSync (stream: Stream, replica: SyncReplica, options: SyncOptions = {}): Promise<SyncResult> {
  const signal = timeoutSignal(options.timeoutMs ?? DEFAULT_SYNC_TIMEOUT_MS, options.signal)
  const channel = messageChannel(stream, syncCodec)
  try {
    const digest = await channel.read({ signal })
    if (digest.type !== 'digest') throw new ProtocolMessageError(`registry-sync: expected digest, got ${digest.type}`)
    const snapshot = [...replica.entries()]
    const differing = (replica.digests?.() ?? digestBuckets(snapshot)).flatMap((d, i) => d === digest.buckets[i] ? [] : [i])
    await channel.write({ type: 'diff', buckets: differing }, { signal })
    const sent = await sendEntries(channel, snapshot, new Set(differing), signal)
    const received = await receiveEntries(channel, replica, signal)
    await channel.write({ type: 'end' }, { signal })
    await channel.close({ signal })
    return { differing: differing.length, received, sent }
  } catch (err: any) {
    stream.abort(err)
    throw err
  }
}
