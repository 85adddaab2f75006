import { Type } from '@sinclair/typebox'
import { JsonCodec } from '../codec.ts'
import { messageChannel, timeoutSignal } from '../stream.ts'
import type { Stream } from '@libp2p/interface'

/**
 * Right after a connection opens, the dialer presents its node certificate
 * and the listener answers with its own. Each side checks the other's
 * certificate names the remote peer id and was signed by the fleet key.
 */
export const CERT_PROTOCOL = '/gatemesh/cert/1.0.0'

/** How long one exchange may take end to end. */
export const DEFAULT_CERT_TIMEOUT_MS = 5_000

export const CertMessageSchema = Type.Object({
  cert: Type.String({ minLength: 16, maxLength: 8 * 1024 })
}, { additionalProperties: false })

export const certCodec = new JsonCodec({ name: 'cert-exchange', version: 1, schema: CertMessageSchema, maxBytes: 9 * 1024 })

export interface CertExchangeOptions {
  /** @default DEFAULT_CERT_TIMEOUT_MS */
  timeoutMs?: number
  signal?: AbortSignal
}

/** Dialer side: send ours, return theirs. */
export async function offerCertificate (stream: Stream, ownCert: string, options: CertExchangeOptions = {}): Promise<string> {
  const signal = timeoutSignal(options.timeoutMs ?? DEFAULT_CERT_TIMEOUT_MS, options.signal)
  const channel = messageChannel(stream, certCodec)
  try {
    await channel.write({ cert: ownCert }, { signal })
    const reply = await channel.read({ signal })
    await channel.close({ signal })
    return reply.cert
  } catch (err: any) {
    stream.abort(err)
    throw err
  }
}

/**
 * Listener side: read theirs, let `accept` check it (it throws to refuse),
 * then answer with ours.
 */
export async function answerCertificate (stream: Stream, ownCert: string, accept: (cert: string) => Promise<void>, options: CertExchangeOptions = {}): Promise<string> {
  const signal = timeoutSignal(options.timeoutMs ?? DEFAULT_CERT_TIMEOUT_MS, options.signal)
  const channel = messageChannel(stream, certCodec)
  try {
    const offer = await channel.read({ signal })
    await accept(offer.cert)
    await channel.write({ cert: ownCert }, { signal })
    await channel.close({ signal })
    return offer.cert
  } catch (err: any) {
    stream.abort(err)
    throw err
  }
}
