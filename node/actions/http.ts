import { DeliveryError, PermanentDeliveryError } from './errors.ts'

/** Headers that carry the job id so a receiver can drop repeats: the common one and Twilio's. */
export function idempotencyHeaders (id: string): Record<string, string> {
  return { 'Idempotency-Key': id, 'I-Twilio-Idempotency-Token': id }
}

/**
 * POST and classify the answer: 2xx delivered; 408, 425, 429 and 5xx (and
 * network errors) are worth retrying; any other 4xx is the receiver saying
 * no for good.
 */
export async function post (url: string, init: { headers: Record<string, string>, body: string, signal: AbortSignal }): Promise<void> {
  let res: Response
  try {
    res = await fetch(url, { method: 'POST', headers: init.headers, body: init.body, signal: init.signal, redirect: 'error' })
  } catch (err: any) {
    throw new DeliveryError(`POST ${url}: ${err.cause?.code ?? err.name ?? ''} ${err.cause?.message ?? err.message}`.trim(), { cause: err })
  }
  const text = await res.text().catch(() => '')
  if (res.ok) return
  const message = `POST ${url}: ${res.status} ${text.slice(0, 200)}`
  if (res.status >= 400 && res.status < 500 && ![408, 425, 429].includes(res.status)) throw new PermanentDeliveryError(message)
  throw new DeliveryError(message)
}
