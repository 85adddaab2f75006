import { Type, type Static } from '@sinclair/typebox'
import { JsonCodec } from '../codec.ts'

/**
 * SWIM-style failure detection between fleet members (probe, ack, indirect
 * probe, piggybacked membership changes). One long-lived stream per
 * connection carries every frame in both directions; see `link.ts`.
 */
export const SWIM_PROTOCOL = '/gatemesh/swim/1.0.0'

/** Largest frame on a probe link: a probe with a full piggyback load fits many times over. */
export const MAX_FRAME_BYTES = 64 * 1024
/** Member records piggybacked on one frame. */
export const MAX_PIGGYBACK = 32
/** Advertised multiaddrs per member. */
export const MAX_ADDRS = 4
export const MAX_ADDR_CHARS = 200
/**
 * Incarnations start near the wall clock in seconds and grow by one per
 * refutation; the bound keeps `inc + 1` exact and far from any real value.
 */
export const MAX_INCARNATION = 2 ** 50
export const MAX_SEQ = 2 ** 32 - 1
/** Longest an indirect probe may ask a relay to wait. */
export const MAX_RELAY_TIMEOUT_MS = 10_000

export const PeerIdString = Type.String({ minLength: 10, maxLength: 128, pattern: '^[1-9A-HJ-NP-Za-km-z]+$' })
/** Ed25519 signature, base64url without padding (86 characters). */
export const Signature = Type.String({ minLength: 86, maxLength: 86, pattern: '^[A-Za-z0-9_-]+$' })
const Seq = Type.Integer({ minimum: 0, maximum: MAX_SEQ })
const EpochMs = Type.Integer({ minimum: 0, maximum: 2 ** 48 })

/**
 * What one node knows about one member: the member's own signed `alive`
 * (incarnation and addresses), and, when someone accuses it at that
 * incarnation, the accuser's signed `suspect` (`s`) or `dead` (`d`). Every
 * claim is signed by the node that makes it, so a relay can pass records on
 * but cannot invent them.
 */
export const MemberRecordSchema = Type.Object({
  id: PeerIdString,
  inc: Type.Integer({ minimum: 0, maximum: MAX_INCARNATION }),
  addrs: Type.Array(Type.String({ minLength: 1, maxLength: MAX_ADDR_CHARS }), { maxItems: MAX_ADDRS }),
  /** `id`'s signature over the alive claim */
  sig: Signature,
  acc: Type.Optional(Type.Object({
    k: Type.Union([Type.Literal('s'), Type.Literal('d')]),
    from: PeerIdString,
    /** `from`'s signature over the accusation */
    sig: Signature
  }, { additionalProperties: false }))
}, { additionalProperties: false })

export type MemberRecord = Static<typeof MemberRecordSchema>
export type Accusation = NonNullable<MemberRecord['acc']>

const Piggyback = Type.Optional(Type.Array(MemberRecordSchema, { maxItems: MAX_PIGGYBACK }))

export const PingSchema = Type.Object({
  t: Type.Literal('ping'),
  seq: Seq,
  g: Piggyback,
  /** the incarnation the prober holds for the target; the target sends its own claim when this is behind */
  inc: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_INCARNATION })),
  /** set when a relay probes on behalf of `id`: the target signs its ack for `id` and nonce `n` */
  for: Type.Optional(Type.Object({ id: PeerIdString, n: Seq }, { additionalProperties: false }))
}, { additionalProperties: false })

export const AckSchema = Type.Object({
  t: Type.Literal('ack'),
  /** the `seq` this answers */
  re: Seq,
  /** the responder's wall clock when it answered, for clock-offset estimates */
  now: EpochMs,
  g: Piggyback,
  /** the target's signature for the origin of an indirect probe */
  sig: Type.Optional(Signature)
}, { additionalProperties: false })

/** Indirect probe: ask the receiver to probe `id` and answer ack or nack. */
export const RelaySchema = Type.Object({
  t: Type.Literal('req'),
  seq: Seq,
  id: PeerIdString,
  /** the asker's nonce, which the target signs so the relay cannot forge its ack */
  n: Seq,
  /** how long the relay may wait for the target */
  ms: Type.Integer({ minimum: 10, maximum: MAX_RELAY_TIMEOUT_MS }),
  g: Piggyback
}, { additionalProperties: false })

/** The relay's probe of the target failed: the asker's own link works. */
export const NackSchema = Type.Object({
  t: Type.Literal('nack'),
  re: Seq
}, { additionalProperties: false })

/** Membership changes with nothing to ask. */
export const GossipSchema = Type.Object({
  t: Type.Literal('gossip'),
  g: Type.Array(MemberRecordSchema, { minItems: 1, maxItems: MAX_PIGGYBACK })
}, { additionalProperties: false })

export const FrameSchema = Type.Union([PingSchema, AckSchema, RelaySchema, NackSchema, GossipSchema])

export type Ping = Static<typeof PingSchema>
export type Ack = Static<typeof AckSchema>
export type Relay = Static<typeof RelaySchema>
export type Nack = Static<typeof NackSchema>
export type Gossip = Static<typeof GossipSchema>
export type Frame = Static<typeof FrameSchema>
export type Request = Ping | Relay
/** A request before its link assigns the sequence number. */
export type Unsequenced = Omit<Ping, 'seq'> | Omit<Relay, 'seq'>
export type Reply = Ack | Nack

export const frameCodec = new JsonCodec({ name: 'swim', version: 1, schema: FrameSchema, maxBytes: MAX_FRAME_BYTES })

const encoder = new TextEncoder()

/** The bytes a member signs to say it is alive at `inc`, reachable at `addrs`. */
export function aliveBytes (id: string, inc: number, addrs: readonly string[]): Uint8Array {
  return encoder.encode(JSON.stringify(['gatemesh-swim-alive/1', id, inc, addrs]))
}

/** The bytes `from` signs to accuse `id` at incarnation `inc`. */
export function accusationBytes (k: Accusation['k'], id: string, inc: number, from: string): Uint8Array {
  return encoder.encode(JSON.stringify(['gatemesh-swim-accuse/1', k, id, inc, from]))
}

/** The bytes a probe target signs so the origin of an indirect probe can trust the relay's ack. */
export function relayedAckBytes (origin: string, nonce: number, target: string): Uint8Array {
  return encoder.encode(JSON.stringify(['gatemesh-swim-ack/1', origin, nonce, target]))
}
