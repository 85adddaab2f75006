import { randomUUID } from 'node:crypto'
import { Type } from '@sinclair/typebox'
import { lpStream, type LengthPrefixedStream } from '@libp2p/utils'
import { JsonCodec } from '../codec.ts'
import { BodyTooLargeError, InvalidMessageError, MalformedMessageError, MessageTooLargeError, ReplyTooLargeError } from '../errors.ts'
import { timeoutSignal } from '../stream.ts'
import type { Stream } from '@libp2p/interface'

/**
 * Forwarded predict requests: an agent without a local replica sends the
 * TF-Serving request body to a peer that has one and relays its answer.
 * One request and one response per stream, each a small JSON header
 * (`bytes` says how long the body is) followed by the body (JSON text) in
 * frames of at most CHUNK_BYTES, so a body of any size up to the
 * configured limit streams through instead of needing one huge frame.
 */
export const PREDICT_PROTOCOL = '/gatemesh/predict/2.1.0'
/**
 * The same exchange without `requestId`, which nodes of earlier releases
 * (whose header schema is closed) refuse: still answered, and dialled when
 * the peer offers nothing newer, so a mesh mid-rollout keeps forwarding.
 */
export const PREDICT_PROTOCOL_2_0 = '/gatemesh/predict/2.0.0'
export const DEFAULT_PREDICT_TIMEOUT_MS = 10_000
/** The one limit on a predict request body, at every hop (config `api.maxPredictBytes`). */
export const DEFAULT_MAX_PREDICT_BYTES = 16 * 1024 * 1024
/** An answer may be this many times the request limit (models that answer with images). */
export const REPLY_LIMIT_FACTOR = 4
/** Body bytes per frame. */
export const CHUNK_BYTES = 256 * 1024
/** Time allowed on top of the timeout per MiB of body, so a large body on a slow link is no timeout. */
export const MS_PER_MIB = 1000
const HEADER_BYTES = 4096
const MIB = 1024 * 1024

const MODEL_NAME = Type.String({ minLength: 1, maxLength: 64, pattern: '^[a-z0-9][a-z0-9._-]*$' })
const BYTES = Type.Integer({ minimum: 0, maximum: 2 ** 31 - 1 })
/** Longest request id, as clients send it (`Idempotency-Key`, `X-Request-Id`) and the mesh carries it. */
export const MAX_REQUEST_ID_LENGTH = 128
/** Printable, header- and Message-ID-safe characters only: it ends up in receivers' headers. */
export const REQUEST_ID_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._~+=:/-]*$'
export const RequestIdSchema = Type.String({ minLength: 1, maxLength: MAX_REQUEST_ID_LENGTH, pattern: REQUEST_ID_PATTERN })
const REQUEST_ID = new RegExp(REQUEST_ID_PATTERN)

/**
 * The request id of a predict where it enters the mesh (HTTP, gRPC, the
 * coordinator): the client's own (`field` names where it came from) when it
 * sent one, checked, else a fresh UUID. Assigned once here, it is the same
 * on every replica the request is retried on.
 */
export function requestIdAt (given: unknown, field: string): string {
  if (given == null || given === '') return randomUUID()
  if (typeof given !== 'string' || given.length > MAX_REQUEST_ID_LENGTH || !REQUEST_ID.test(given)) {
    throw new InvalidMessageError(`${field}: a request id is 1-${MAX_REQUEST_ID_LENGTH} characters of letters, digits and ._~+=:/- (starting with a letter or digit)`, field)
  }
  return given
}

export const PredictRequestHeaderSchema = Type.Object({
  model: MODEL_NAME,
  /** a specific model version, as in /v1/models/NAME/versions/V:predict */
  version: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
  /** length of the body that follows: the JSON of POST /v1/models/<model>:predict; for `answer: tensors`, `{inputs, output_filter}` of typed tensors */
  bytes: BYTES,
  /** the longest answer body the asking node takes */
  maxReplyBytes: BYTES,
  /** how to answer: TF Serving's REST JSON (absent), typed tensors (gRPC Predict) or the model's signature (GetModelMetadata) */
  answer: Type.Optional(Type.Union([Type.Literal('tensors'), Type.Literal('metadata')])),
  /**
   * The id the request got where it entered the mesh, the same on every
   * replica the router tries: the actions its rules fire carry keys made
   * from it, so a receiver drops the copy a retried replica sends too.
   */
  requestId: Type.Optional(RequestIdSchema)
}, { additionalProperties: false })

export type PredictAnswer = 'tensors' | 'metadata'

export const PredictReplyHeaderSchema = Type.Object({
  /** the HTTP status the replica answered with */
  status: Type.Integer({ minimum: 100, maximum: 599 }),
  /** length of the answer body (JSON) that follows */
  bytes: BYTES
}, { additionalProperties: false })

export const predictRequestHeaderCodec = new JsonCodec({ name: 'predict-request', version: 2, schema: PredictRequestHeaderSchema, maxBytes: HEADER_BYTES })
export const predictReplyHeaderCodec = new JsonCodec({ name: 'predict-reply', version: 2, schema: PredictReplyHeaderSchema, maxBytes: HEADER_BYTES })

export interface PredictReply { status: number, body: unknown }

export interface PredictRequest {
  model: string
  version?: string
  /** the body as encodePredictBody made it */
  body: Uint8Array
  /** how the replica answers (gRPC's typed tensors or signature); TF Serving's REST JSON when absent */
  answer?: PredictAnswer
  /** the id assigned where the request entered (see PredictRequestHeaderSchema) */
  requestId?: string
}

const encoder = new TextEncoder()
const decoder = new TextDecoder('utf-8', { fatal: true })

/** Room for tensors' names, shapes and dtypes around their base64 data. */
const TENSOR_JSON_OVERHEAD = 64 * 1024

/**
 * The limit on a request body as it crosses the mesh. The body limit is on
 * what a client sends; a gRPC request's tensors cross the mesh as base64
 * (4/3 of their bytes) in a little JSON, so they get that much more room.
 */
export function bodyLimitFor (answer: PredictAnswer | undefined, maxBodyBytes: number): number {
  return answer === 'tensors' ? Math.ceil(maxBodyBytes * 4 / 3) + TENSOR_JSON_OVERHEAD : maxBodyBytes
}

/** The JSON of a predict body, refused past `limit` bytes (before anything is sent). */
export function encodePredictBody (body: unknown, limit: number): Uint8Array {
  const bytes = encoder.encode(JSON.stringify(body ?? null))
  if (bytes.byteLength > limit) throw new BodyTooLargeError(`body: the predict request is ${bytes.byteLength} bytes; the limit is ${limit} (api.maxPredictBytes)`, bytes.byteLength, limit)
  return bytes
}

/** The exchange's deadline: the timeout, plus time for the body to cross (MS_PER_MIB per MiB, pro rata: a small body adds nearly nothing). */
function deadline (timeoutMs: number, bytes: number, parent?: AbortSignal): AbortSignal {
  return timeoutSignal(timeoutMs + Math.ceil(bytes * MS_PER_MIB / MIB), parent)
}

function channel (stream: Stream, inbound: number): LengthPrefixedStream<Stream> {
  // the read buffer holds what arrived before it was read: at most the body being received
  return lpStream(stream, { maxDataLength: CHUNK_BYTES, maxBufferSize: inbound + MIB })
}

async function writeBody (lp: LengthPrefixedStream<Stream>, body: Uint8Array, signal: AbortSignal): Promise<void> {
  for (let at = 0; at < body.byteLength; at += CHUNK_BYTES) await lp.write(body.subarray(at, at + CHUNK_BYTES), { signal })
}

/** Exactly `bytes` of body in frames; `keep` false reads and drops them (a refused request still drains). */
async function readBody (lp: LengthPrefixedStream<Stream>, bytes: number, signal: AbortSignal, what: string, keep = true): Promise<Uint8Array> {
  const parts: Uint8Array[] = []
  let got = 0
  while (got < bytes) {
    const frame = (await lp.read({ signal })).subarray()
    if (frame.byteLength === 0 || got + frame.byteLength > bytes) throw new MalformedMessageError(`${what}: body frames do not add up to the ${bytes} bytes announced`)
    got += frame.byteLength
    if (keep) parts.push(frame)
  }
  return keep ? Buffer.concat(parts, bytes) : new Uint8Array(0)
}

function parseBody (bytes: Uint8Array, what: string): unknown {
  try {
    return JSON.parse(decoder.decode(bytes))
  } catch (err) {
    throw new InvalidMessageError(`${what}: body is not valid JSON (${(err as Error).message})`, 'body')
  }
}

export interface ForwardOptions {
  /** The protocol the stream speaks (its `protocol`): PREDICT_PROTOCOL_2_0 gets no `requestId`. @default PREDICT_PROTOCOL */
  protocol?: string
  /** @default DEFAULT_PREDICT_TIMEOUT_MS, plus MS_PER_MIB per MiB of body */
  timeoutMs?: number
  signal?: AbortSignal
  /** The longest answer body taken. @default REPLY_LIMIT_FACTOR × DEFAULT_MAX_PREDICT_BYTES */
  maxReplyBytes?: number
}

/** Caller side: send one request, wait for the reply. */
export async function forwardPredict (stream: Stream, request: PredictRequest, options: ForwardOptions = {}): Promise<PredictReply> {
  const maxReply = options.maxReplyBytes ?? REPLY_LIMIT_FACTOR * DEFAULT_MAX_PREDICT_BYTES
  const signal = deadline(options.timeoutMs ?? DEFAULT_PREDICT_TIMEOUT_MS, request.body.byteLength, options.signal)
  const lp = channel(stream, maxReply)
  try {
    const header = {
      model: request.model,
      ...(request.version == null ? {} : { version: request.version }),
      bytes: request.body.byteLength,
      maxReplyBytes: maxReply,
      ...(request.answer == null ? {} : { answer: request.answer }),
      ...(request.requestId == null || options.protocol === PREDICT_PROTOCOL_2_0 ? {} : { requestId: request.requestId })
    }
    await lp.write(predictRequestHeaderCodec.encode(header), { signal })
    await writeBody(lp, request.body, signal)
    const head = predictReplyHeaderCodec.decode(await lp.read({ signal }))
    if (head.bytes > maxReply) throw new MessageTooLargeError(`predict-reply: an answer of ${head.bytes} bytes exceeds the ${maxReply} asked for`)
    const body = parseBody(await readBody(lp, head.bytes, signal, 'predict-reply'), 'predict-reply')
    await stream.close({ signal })
    return { status: head.status, body }
  } catch (err: any) {
    stream.abort(err)
    throw err
  }
}

export interface AnswerOptions {
  /** @default DEFAULT_PREDICT_TIMEOUT_MS, plus MS_PER_MIB per MiB of body */
  timeoutMs?: number
  /** This node's limit on request bodies. @default DEFAULT_MAX_PREDICT_BYTES */
  maxBodyBytes?: number
  /**
   * Hold `bytes` of request body: a function that lets them go, or an error
   * to answer with (too much held at once).
   */
  admit?: (bytes: number) => (() => void) | Error
  /** The answer for a request refused before `handle` (too large, not JSON, overloaded). */
  refuse: (err: Error) => PredictReply
}

/** Replica side: read one request, answer it with `handle`. */
export async function answerPredict (stream: Stream, handle: (model: string, version: string | undefined, body: unknown, answer: PredictAnswer | undefined, requestId: string | undefined) => Promise<PredictReply>, options: AnswerOptions): Promise<void> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_PREDICT_TIMEOUT_MS
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_PREDICT_BYTES
  const lp = channel(stream, bodyLimitFor('tensors', maxBodyBytes))
  let release: (() => void) | undefined
  try {
    const head = predictRequestHeaderCodec.decode(await lp.read({ signal: timeoutSignal(timeoutMs) }))
    const maxBody = bodyLimitFor(head.answer, maxBodyBytes)
    const signal = deadline(timeoutMs, Math.min(head.bytes, maxBody))
    let reply: PredictReply | undefined
    const admitted = head.bytes > maxBody
      ? new BodyTooLargeError(`body: the predict request is ${head.bytes} bytes; this node's limit is ${maxBody} (api.maxPredictBytes${maxBody === maxBodyBytes ? '' : ', as tensors cross the mesh'})`, head.bytes, maxBody)
      : options.admit?.(head.bytes)
    if (admitted instanceof Error) {
      // answered in full, not reset: the asking node reads a clear refusal, and the body it
      // is still sending is read and dropped so its writes do not stall
      reply = options.refuse(admitted)
      await readBody(lp, head.bytes, deadline(timeoutMs, head.bytes), 'predict-request', false)
    } else {
      release = admitted
      let body: unknown
      try {
        body = parseBody(await readBody(lp, head.bytes, signal, 'predict-request'), 'predict-request')
      } catch (err: any) {
        if (err?.code !== 'ERR_INVALID_MESSAGE') throw err
        reply = options.refuse(err)
      }
      reply ??= await handle(head.model, head.version, body, head.answer, head.requestId)
      // held until answered: the parsed body lives as long as the predict does
      release?.()
      release = undefined
    }
    let out = encoder.encode(JSON.stringify(reply.body ?? null))
    if (out.byteLength > head.maxReplyBytes) {
      reply = options.refuse(new ReplyTooLargeError(`the answer of ${head.model} is ${out.byteLength} bytes; the asking node takes at most ${head.maxReplyBytes}`))
      out = encoder.encode(JSON.stringify(reply.body ?? null))
    }
    await lp.write(predictReplyHeaderCodec.encode({ status: reply.status, bytes: out.byteLength }), { signal })
    await writeBody(lp, out, signal)
    await stream.close({ signal })
  } catch (err: any) {
    stream.abort(err)
    throw err
  } finally {
    release?.()
  }
}
