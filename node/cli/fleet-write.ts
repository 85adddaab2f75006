import { Type } from '@sinclair/typebox'
import { compile } from '../../protocols/schema.ts'
import { PEER_ID_PATTERN, TimestampSchema } from '../../protocols/registry/wire.ts'
import { authorizeRegistryWrite, type AuthorizeOptions, type Signer } from '../../packaging/trust.ts'

/** One HTTP call to an agent's API, answering the parsed JSON body or throwing. */
export type ApiCall = (method: string, path: string, body?: unknown) => Promise<unknown>

export const WRITE_STAMP_PATH = '/v1/write-stamp'

const WriteStampSchema = Type.Object({
  key: Type.String(),
  writer: Type.String({ pattern: PEER_ID_PATTERN }),
  ts: TimestampSchema
})
const validateStamp = compile(WriteStampSchema)

/**
 * Authorise one registry write that an agent will make: ask that agent
 * for the writer id and timestamp the entry will carry, then sign them with
 * the key, the exact value text and an expiry. The authorisation is good for
 * that one entry through that one agent, so replaying it cannot undo a later
 * write. `valueJson` is the value as the agent will serialise it
 * (`JSON.stringify(value)`), or null to delete.
 */
export async function authorizeThrough (call: ApiCall, key: string, valueJson: string | null, signer: Signer, options: AuthorizeOptions = {}): Promise<string> {
  const stamp = await call('GET', `${WRITE_STAMP_PATH}?key=${encodeURIComponent(key)}`)
  if (!validateStamp(stamp) || stamp.key !== key) throw new Error(`the agent's answer to ${WRITE_STAMP_PATH} is malformed`)
  return await authorizeRegistryWrite({ key, valueJson, writer: stamp.writer, ts: stamp.ts }, signer, options)
}
