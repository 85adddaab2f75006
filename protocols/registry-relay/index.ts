import { Type } from '@sinclair/typebox'
import { JsonCodec } from '../codec.ts'
import { RemoteRefusedError } from '../errors.ts'
import { RefusalSchema, refusalOf, type Refusal } from '../refusal.ts'
import { duplexChannel, timeoutSignal } from '../stream.ts'
import { WireEntrySchema } from '../registry/wire.ts'
import type { WireEntry } from '../registry/wire.ts'
import type { Stream } from '@libp2p/interface'

/**
 * Health through the zone's scheduler. A member sends its own signed
 * `health/<self>` entry to its zone's scheduler instead of gossiping it to
 * the zone; the scheduler checks it as gossip would (certificate, zone,
 * signature, the writer's rate) and sends it on with its next lease
 * renewal, in the same delta. A zone of Z members then gossips about one
 * delta a second (the renewal, carrying what health changed), not
 * Z / 60 + 1. A refusal, a timeout or no scheduler: the member gossips the
 * entry itself, as before.
 */
export const RELAY_PROTOCOL = '/gatemesh/registry-relay/1.0.0'

/** Key prefixes a scheduler relays: per-node status only, never what places or runs anything. */
export const RELAYED_PREFIXES: readonly string[] = ['health/']

export const isRelayed = (key: string): boolean => RELAYED_PREFIXES.some(p => key.startsWith(p))

export const DEFAULT_RELAY_TIMEOUT_MS = 2000

/** Most entries in one request: a member relays its own health, one key. */
export const MAX_RELAY_ENTRIES = 4

export const RelayRequestSchema = Type.Object({
  entries: Type.Array(WireEntrySchema, { minItems: 1, maxItems: MAX_RELAY_ENTRIES })
}, { additionalProperties: false })

export const RelayResponseSchema = Type.Union([
  Type.Object({ ok: Type.Literal(true) }, { additionalProperties: false }),
  RefusalSchema
])

export const relayRequestCodec = new JsonCodec({ name: 'registry-relay-request', version: 1, schema: RelayRequestSchema, maxBytes: 64 * 1024 })
export const relayResponseCodec = new JsonCodec({ name: 'registry-relay-response', version: 1, schema: RelayResponseSchema, maxBytes: 1024 })

export interface RelayOptions {
  /** @default DEFAULT_RELAY_TIMEOUT_MS */
  timeoutMs?: number
  signal?: AbortSignal
}

/** Member side: hand entries to the scheduler; RemoteRefusedError when it refuses. */
export async function requestRelay (stream: Stream, entries: WireEntry[], options: RelayOptions = {}): Promise<void> {
  const signal = timeoutSignal(options.timeoutMs ?? DEFAULT_RELAY_TIMEOUT_MS, options.signal)
  const channel = duplexChannel(stream, relayRequestCodec, relayResponseCodec)
  try {
    await channel.write({ entries }, { signal })
    const reply = await channel.read({ signal })
    await channel.close({ signal })
    if ('error' in reply) throw new RemoteRefusedError(`relay refused: ${reply.error}`, reply.code)
  } catch (err: any) {
    stream.abort(err)
    throw err
  }
}

/**
 * Scheduler side: read the request, let `accept` check and queue the
 * entries (it throws an error with a `code` to refuse), answer.
 */
export async function answerRelay (stream: Stream, accept: (entries: WireEntry[]) => Promise<void>, options: RelayOptions = {}): Promise<void> {
  const signal = timeoutSignal(options.timeoutMs ?? DEFAULT_RELAY_TIMEOUT_MS, options.signal)
  const channel = duplexChannel(stream, relayResponseCodec, relayRequestCodec)
  try {
    const request = await channel.read({ signal })
    let reply: { ok: true } | Refusal
    try {
      await accept(request.entries)
      reply = { ok: true }
    } catch (err) {
      reply = refusalOf(err)
    }
    await channel.write(reply, { signal })
    await channel.close({ signal })
  } catch (err: any) {
    stream.abort(err)
    throw err
  }
}
