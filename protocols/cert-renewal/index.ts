import { Type } from '@sinclair/typebox'
import { JsonCodec } from '../codec.ts'
import { RemoteRefusedError } from '../errors.ts'
import { RefusalSchema, refusalOf } from '../refusal.ts'
import { duplexChannel, timeoutSignal } from '../stream.ts'
import type { Stream } from '@libp2p/interface'

/**
 * Certificate renewal over the mesh: a node sends its current (still
 * valid) certificate to a coordinator, which answers with a fresh one for
 * the same peer id, role and labels, or with a refusal (revoked, expired,
 * another fleet). The connection itself proves the peer id (Noise), so the
 * request needs no other proof.
 */
export const CERT_RENEW_PROTOCOL = '/gatemesh/cert-renew/1.0.0'

export const DEFAULT_RENEW_TIMEOUT_MS = 10_000

const Cert = Type.String({ minLength: 16, maxLength: 8 * 1024 })

export const RenewRequestSchema = Type.Object({ cert: Cert }, { additionalProperties: false })

export const RenewResponseSchema = Type.Union([
  Type.Object({ cert: Cert }, { additionalProperties: false }),
  RefusalSchema
])

export const renewRequestCodec = new JsonCodec({ name: 'cert-renew-request', version: 1, schema: RenewRequestSchema, maxBytes: 9 * 1024 })
export const renewResponseCodec = new JsonCodec({ name: 'cert-renew-response', version: 1, schema: RenewResponseSchema, maxBytes: 9 * 1024 })

export interface RenewOptions {
  /** @default DEFAULT_RENEW_TIMEOUT_MS */
  timeoutMs?: number
  signal?: AbortSignal
}

/** Node side: send the current certificate, get a fresh one (RemoteRefusedError when refused). */
export async function requestRenewal (stream: Stream, current: string, options: RenewOptions = {}): Promise<string> {
  const signal = timeoutSignal(options.timeoutMs ?? DEFAULT_RENEW_TIMEOUT_MS, options.signal)
  const channel = duplexChannel(stream, renewRequestCodec, renewResponseCodec)
  try {
    await channel.write({ cert: current }, { signal })
    const reply = await channel.read({ signal })
    await channel.close({ signal })
    if ('error' in reply) throw new RemoteRefusedError(`renewal refused: ${reply.error}`, reply.code)
    return reply.cert
  } catch (err: any) {
    stream.abort(err)
    throw err
  }
}

/**
 * Coordinator side: read the request, let `issue` make the new certificate
 * (it throws an error with a `code` to refuse), answer.
 */
export async function answerRenewal (stream: Stream, issue: (current: string) => Promise<string>, options: RenewOptions = {}): Promise<void> {
  const signal = timeoutSignal(options.timeoutMs ?? DEFAULT_RENEW_TIMEOUT_MS, options.signal)
  const channel = duplexChannel(stream, renewResponseCodec, renewRequestCodec)
  try {
    const request = await channel.read({ signal })
    let reply
    try {
      reply = { cert: await issue(request.cert) }
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
