import { Type, type Static } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import type { AgentView } from '../server.ts'

const RunBody = Type.Object({
  /** digest of a bundle this node holds (POST /v1/bundles, or pulled from the mesh) */
  bundle: Type.String({ pattern: '^[0-9a-f]{64}$' }),
  /** the name to serve under (the manifest's name by default) */
  name: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: '^[a-z0-9][a-z0-9._-]*$' })),
  /** feed the model from these sensors (overrides the bundle's input.sensors) */
  sensors: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { minItems: 1, maxItems: 16 })),
  /** further overrides of the bundle's config.json */
  spec: Type.Optional(Type.Object({}, { additionalProperties: true }))
}, { additionalProperties: false })

const NameParams = Type.Object({ name: Type.String({ minLength: 1, maxLength: 64 }) }, { additionalProperties: false })
const IdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) }, { additionalProperties: false })

/** Local control of instances, sensors and the outbox (`gatemesh run`, `gatemesh stop`). */
export async function instanceRoutes (app: FastifyInstance, { agent }: { agent: AgentView }): Promise<void> {
  const local = agent.local
  if (local == null) return

  app.get('/v1/instances', async () => ({ instances: local.runtime.list().map(i => i.describe()), backend: local.runtime.backend }))

  app.post<{ Body: Static<typeof RunBody> }>('/v1/instances', { schema: { body: RunBody } }, async (request, reply) => {
    const { bundle, name, sensors, spec } = request.body
    const overrides: Record<string, unknown> = { ...spec }
    if (name != null) overrides.name = name
    // merged over the bundle's input, so its window and preprocessing stay
    if (sensors != null) overrides.input = { ...(overrides.input ?? {}) as object, sensors }
    const instance = await local.runtime.run({ bundle, spec: overrides })
    return await reply.code(201).send(instance.describe())
  })

  app.delete<{ Params: Static<typeof NameParams> }>('/v1/instances/:name', { schema: { params: NameParams } }, async request => {
    await local.runtime.stopInstance(request.params.name)
    return { stopped: request.params.name }
  })

  app.get('/v1/sensors', async () => ({ sensors: local.devices.state() }))

  app.get('/v1/outbox', async () => ({ pending: local.outbox.size, jobs: local.outbox.pending().slice(0, 100), dead: await local.outbox.dead(100) }))

  app.post<{ Params: Static<typeof IdParams> }>('/v1/outbox/dead/:id/retry', { schema: { params: IdParams } }, async request => await local.outbox.retryDead(request.params.id))
}
