import { Type } from '@sinclair/typebox'
import { JsonCodec } from '../codec.ts'
import { WireEntrySchema } from './wire.ts'

/** Gossipsub topic carrying registry deltas. */
export const REGISTRY_TOPIC = 'gatemesh/registry/1'

/** Most entries in one delta; local writes are batched up to this. */
export const MAX_DELTA_ENTRIES = 256

export const DeltaSchema = Type.Object({
  entries: Type.Array(WireEntrySchema, { minItems: 1, maxItems: MAX_DELTA_ENTRIES })
}, { additionalProperties: false })

export const deltaCodec = new JsonCodec({
  name: 'registry-delta',
  version: 1,
  schema: DeltaSchema,
  maxBytes: 1024 * 1024
})
