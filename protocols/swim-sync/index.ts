import { Type, type Static } from '@sinclair/typebox'
import { JsonCodec } from '../codec.ts'
import { MemberRecordSchema, type MemberRecord } from '../swim/wire.ts'
import { messageChannel, timeoutSignal } from '../stream.ts'
import type { Stream } from '@libp2p/interface'

/**
 * Push-pull: two members swap every member record they hold, so a joining
 * node learns the whole membership at once and two halves of a healed
 * partition learn what each said about the other (and refute it). Rare and
 * O(N) bytes, unlike probes and piggybacked gossip.
 */
export const SWIM_SYNC_PROTOCOL = '/gatemesh/swim-sync/1.0.0'

/** Most records one side may send: a zone's worth of members with room to spare. */
export const MAX_SYNC_RECORDS = 8192
export const DEFAULT_PUSH_PULL_TIMEOUT_MS = 10_000

export const PushPullSchema = Type.Object({
  records: Type.Array(MemberRecordSchema, { maxItems: MAX_SYNC_RECORDS }),
  /** the sender's wall clock, ms */
  now: Type.Integer({ minimum: 0, maximum: 2 ** 48 })
}, { additionalProperties: false })

export type PushPull = Static<typeof PushPullSchema>

export const pushPullCodec = new JsonCodec({ name: 'swim-sync', version: 1, schema: PushPullSchema, maxBytes: 8 * 1024 * 1024 })

export interface PushPullOptions {
  /** @default DEFAULT_PUSH_PULL_TIMEOUT_MS */
  timeoutMs?: number
  signal?: AbortSignal
}

/** Initiator: send ours, return theirs. */
export async function pushPull (stream: Stream, records: MemberRecord[], options: PushPullOptions = {}): Promise<PushPull> {
  const signal = timeoutSignal(options.timeoutMs ?? DEFAULT_PUSH_PULL_TIMEOUT_MS, options.signal)
  const channel = messageChannel(stream, pushPullCodec)
  try {
    await channel.write({ records: records.slice(0, MAX_SYNC_RECORDS), now: Date.now() }, { signal })
    const theirs = await channel.read({ signal })
    await channel.close({ signal })
    return theirs
  } catch (err: any) {
    stream.abort(err)
    throw err
  }
}

/** Responder: read theirs, answer with what `answer` returns (our records), and hand theirs back. */
export async function answerPushPull (stream: Stream, answer: () => MemberRecord[], options: PushPullOptions = {}): Promise<PushPull> {
  const signal = timeoutSignal(options.timeoutMs ?? DEFAULT_PUSH_PULL_TIMEOUT_MS, options.signal)
  const channel = messageChannel(stream, pushPullCodec)
  try {
    const theirs = await channel.read({ signal })
    await channel.write({ records: answer().slice(0, MAX_SYNC_RECORDS), now: Date.now() }, { signal })
    await channel.close({ signal })
    return theirs
  } catch (err: any) {
    stream.abort(err)
    throw err
  }
}
