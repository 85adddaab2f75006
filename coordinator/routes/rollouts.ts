import { Type, type Static } from '@sinclair/typebox'
import { LabelsSchema } from '../../node/config/schema.ts'
import { RolloutSpecSchema } from '../../node/release/rollout.ts'
import { ownerOf } from './models.ts'
import { errorResponses, NoQuery } from './schemas.ts'
import type { CoordinatorContext } from '../app.ts'
import type { FastifyInstance } from 'fastify'

const IdParams = Type.Object({ id: RolloutSpecSchema.properties.id }, { additionalProperties: false })
const ChangeBody = Type.Object({
  state: Type.Optional(Type.Union([Type.Literal('active'), Type.Literal('paused'), Type.Literal('aborted')], { description: 'paused holds it, active resumes it, aborted ends it for good' })),
  maxFailures: Type.Optional(Type.Integer({ minimum: 0, maximum: 100_000, description: 'raise it to let a halted rollout go on' }))
}, { additionalProperties: false, minProperties: 1 })

const CreateBody = Type.Object({
  releases: Type.Array(Type.String({ pattern: '^[0-9a-f]{64}$' }), { minItems: 1, maxItems: 2, description: 'digests of release bundles some node holds (gatemesh release publish), one per CPU, all of one version' }),
  id: Type.Optional(RolloutSpecSchema.properties.id),
  description: Type.Optional(Type.String({ maxLength: 512 })),
  waves: Type.Optional(Type.Array(Type.Number({ exclusiveMinimum: 0, maximum: 100 }), { minItems: 1, maxItems: 10, description: 'cumulative percentages; the last is 100. Default [100]' })),
  labels: Type.Optional(LabelsSchema),
  maxFailures: Type.Optional(Type.Integer({ minimum: 0, maximum: 100_000 })),
  waveWaitSec: Type.Optional(Type.Integer({ minimum: 0, maximum: 7 * 86400 })),
  healthDeadlineSec: Type.Optional(Type.Integer({ minimum: 10, maximum: 3600 })),
  allowDowngrade: Type.Optional(Type.Boolean())
}, { additionalProperties: false })

/** A rollout as every agent works it out (node/release/waves.ts). */
export const RolloutViewSchema = Type.Object({
  id: Type.String(),
  version: Type.String(),
  phase: Type.String({ description: 'active, paused, aborted, halted (more failures than allowed) or done' }),
  currentWave: Type.Integer(),
  failures: Type.Integer(),
  spec: Type.Unknown({ description: 'the signed rollout record' }),
  waves: Type.Array(Type.Object({ index: Type.Integer(), percent: Type.Number(), size: Type.Integer(), done: Type.Integer(), failed: Type.Integer(), started: Type.Boolean() })),
  targets: Type.Array(Type.Object({ peer: Type.String(), wave: Type.Integer(), arch: Type.String(), outcome: Type.String(), version: Type.String(), state: Type.Optional(Type.String()), detail: Type.Optional(Type.String()), at: Type.Optional(Type.Number()) })),
  excluded: Type.Array(Type.Object({ peer: Type.String(), reason: Type.String() })),
  unmatchedArch: Type.Integer()
}, { $id: 'Rollout' })

const ReleaseSchema = Type.Object({
  digest: Type.String(),
  version: Type.String(),
  size: Type.Integer(),
  holders: Type.Integer({ description: 'nodes that advertise it complete' }),
  arch: Type.Optional(Type.String()),
  createdAt: Type.Optional(Type.String())
}, { additionalProperties: false })

const tags = ['rollouts']
/** Reading rollouts is watching nodes; changing what the fleet's agents run is an admin's act. */
const read = { service: 'nodes' as const }
const write = { service: 'nodes' as const, roles: ['admin' as const] }

/**
 * Agent rollouts through the coordinator: it signs the record with the
 * fleet key and writes it to the registry; the agents run the waves among
 * themselves, with or without the coordinator.
 */
export async function rolloutRoutes (app: FastifyInstance, { ctx }: { ctx: CoordinatorContext }): Promise<void> {
  const rollouts = ctx.rollouts
  if (rollouts == null) return

  app.post<{ Body: Static<typeof CreateBody> }>('/api/v1/rollouts', {
    config: write,
    schema: {
      tags,
      summary: 'Roll an agent release out to the fleet in waves: the coordinator pulls and verifies the releases, signs the rollout with the fleet key and writes it to the mesh',
      querystring: NoQuery,
      body: CreateBody,
      response: { 201: Type.Ref('Rollout'), ...errorResponses(400, 401, 403) }
    }
  }, async (request, reply) => await reply.code(201).send(await rollouts.create(request.body, ownerOf(request))))

  app.get('/api/v1/rollouts', {
    config: read,
    schema: { tags, summary: 'Every rollout, newest first, with its waves and each target\'s progress', querystring: NoQuery, response: { 200: Type.Object({ rollouts: Type.Array(Type.Ref('Rollout')), count: Type.Integer() }), ...errorResponses(401, 403) } }
  }, async () => {
    const list = rollouts.list()
    return { rollouts: list, count: list.length }
  })

  app.get('/api/v1/releases', {
    config: read,
    schema: {
      tags,
      summary: 'Release bundles some node advertises complete (gatemesh release publish), newest version first: what a rollout can name. Version and size are the holders\' word; arch and createdAt come from the manifest once the coordinator holds the bundle',
      querystring: NoQuery,
      response: { 200: Type.Object({ releases: Type.Array(ReleaseSchema), count: Type.Integer() }), ...errorResponses(401, 403) }
    }
  }, async () => {
    const list = await rollouts.releases()
    return { releases: list, count: list.length }
  })

  app.get<{ Params: Static<typeof IdParams> }>('/api/v1/rollouts/:id', {
    config: read,
    schema: { tags, summary: 'One rollout', params: IdParams, querystring: NoQuery, response: { 200: Type.Ref('Rollout'), ...errorResponses(400, 401, 403, 404) } }
  }, async request => rollouts.get(request.params.id))

  app.patch<{ Params: Static<typeof IdParams>, Body: Static<typeof ChangeBody> }>('/api/v1/rollouts/:id', {
    config: write,
    schema: { tags, summary: 'Pause, resume or abort a rollout, or change its failure budget (the record is signed again); nodes that took the release keep it', params: IdParams, querystring: NoQuery, body: ChangeBody, response: { 200: Type.Ref('Rollout'), ...errorResponses(400, 401, 403, 404, 409) } }
  }, async request => await rollouts.change(request.params.id, request.body, ownerOf(request)))
}
