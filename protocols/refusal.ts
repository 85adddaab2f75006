import { Type, type Static } from '@sinclair/typebox'

/** A request/response protocol's refusal on the wire: what went wrong and its code, bounded. */
export const RefusalSchema = Type.Object({
  error: Type.String({ maxLength: 512 }),
  code: Type.String({ maxLength: 64, pattern: '^[A-Z0-9_]+$' })
}, { additionalProperties: false })

export type Refusal = Static<typeof RefusalSchema>

/** The refusal an answering side sends for `err`: its message and code (`ERR_REFUSED` when it has no wire-safe code). */
export function refusalOf (err: any): Refusal {
  const code = typeof err?.code === 'string' && /^[A-Z0-9_]{1,64}$/.test(err.code) ? err.code as string : 'ERR_REFUSED'
  return { error: String(err?.message ?? 'refused').slice(0, 512), code }
}
