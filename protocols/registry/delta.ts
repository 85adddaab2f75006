import { Type } from '@sinclair/typebox'
import { JsonCodec } from '../codec.ts'
import { WireEntrySchema } from './wire.ts'

/**
 * Gossipsub topic carrying registry deltas: unsigned gossipsub messages whose
 * entries carry their writers' signatures. Version 1 carried gossipsub-signed
 * messages; the two policies refuse each other's messages (and would score
 * each other down), so during an upgrade they keep to their own topics and
 * anti-entropy carries entries between versions.
 */
export const REGISTRY_TOPIC = 'gatemesh/registry/2'

/** Most entries in one delta; local writes are batched up to this. All entries of one delta have one writer. */
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
