import { Type } from '@sinclair/typebox'
import { JsonCodec } from '../codec.ts'
import { duplexChannel, timeoutSignal } from '../stream.ts'
import type { Stream } from '@libp2p/interface'

/**
 * Forwarded predict requests: an agent without a local replica sends the
 * TF-Serving request body to a peer that has one and relays its answer.
 * One request and one response per stream.
 */
export const PREDICT_PROTOCOL = '/gatemesh/predict/1.0.0'
export const DEFAULT_PREDICT_TIMEOUT_MS = 10_000

const MODEL_NAME = Type.String({ minLength: 1, maxLength: 64, pattern: '^[a-z0-9][a-z0-9._-]*$' })

export const PredictRequestSchema = Type.Object({
  model: MODEL_NAME,
  /** a specific model version, as in /v1/models/NAME/versions/V:predict */
  version: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
  /** the body of POST /v1/models/<model>:predict, as the client sent it; for `answer: tensors`, `{inputs, output_filter}` of typed tensors */
  body: Type.Unknown(),
  /** how to answer: TF Serving's REST JSON (absent), typed tensors (gRPC Predict) or the model's signature (GetModelMetadata) */
  answer: Type.Optional(Type.Union([Type.Literal('tensors'), Type.Literal('metadata')]))
}, { additionalProperties: false })

export type PredictAnswer = 'tensors' | 'metadata'

export const PredictResponseSchema = Type.Object({
  /** the HTTP status the replica answered with */
  status: Type.Integer({ minimum: 100, maximum: 599 }),
  body: Type.Unknown()
}, { additionalProperties: false })

export const predictRequestCodec = new JsonCodec({ name: 'predict-request', version: 1, schema: PredictRequestSchema, maxBytes: 4 * 1024 * 1024 })
export const predictResponseCodec = new JsonCodec({ name: 'predict-response', version: 1, schema: PredictResponseSchema, maxBytes: 8 * 1024 * 1024 })

export interface PredictReply { status: number, body: unknown }

/** Caller side: send one request, wait for the reply. */
export async function forwardPredict (stream: Stream, model: string, version: string | undefined, body: unknown, options: { timeoutMs?: number, signal?: AbortSignal, answer?: PredictAnswer } = {}): Promise<PredictReply> {
  const signal = timeoutSignal(options.timeoutMs ?? DEFAULT_PREDICT_TIMEOUT_MS, options.signal)
  const channel = duplexChannel(stream, predictRequestCodec, predictResponseCodec)
  try {
    await channel.write({ model, ...(version == null ? {} : { version }), body, ...(options.answer == null ? {} : { answer: options.answer }) }, { signal })
    const reply = await channel.read({ signal })
    await channel.close({ signal })
    return { status: reply.status, body: reply.body }
  } catch (err: any) {
    stream.abort(err)
    throw err
  }
}

/** Replica side: read one request, answer it with `handle`. */
export async function answerPredict (stream: Stream, handle: (model: string, version: string | undefined, body: unknown, answer: PredictAnswer | undefined) => Promise<PredictReply>, options: { timeoutMs?: number } = {}): Promise<void> {
  const signal = timeoutSignal(options.timeoutMs ?? DEFAULT_PREDICT_TIMEOUT_MS)
  const channel = duplexChannel(stream, predictResponseCodec, predictRequestCodec)
  try {
    const request = await channel.read({ signal })
    const answer = await handle(request.model, request.version, request.body, request.answer)
    await channel.write({ status: answer.status, body: answer.body }, { signal })
    await channel.close({ signal })
  } catch (err: any) {
    stream.abort(err)
    throw err
  }
}
