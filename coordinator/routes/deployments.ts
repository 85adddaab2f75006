import { Type, type Static } from '@sinclair/typebox'
import { DeploymentSpecSchema } from '../../node/scheduler/spec.ts'
import { principalOf } from '../auth/plugin.ts'
import { errorResponses, NoQuery } from './schemas.ts'
import { ownerOf } from './models.ts'
import type { CoordinatorContext } from '../app.ts'
import type { FastifyInstance } from 'fastify'

const IdParams = Type.Object({ id: DeploymentSpecSchema.properties.id }, { additionalProperties: false })

const Version = Type.Object({ bundle: Type.String(), version: Type.Optional(Type.String()) })
const ModelUpdateViewSchema = Type.Object({
  phase: Type.Union(['canary', 'rolling', 'succeeded', 'rolled-back', 'superseded'].map(p => Type.Literal(p))),
  from: Version,
  to: Version,
  step: Type.Integer({ description: 'nodes switched to the new version so far (while in progress)' }),
  of: Type.Integer(),
  updated: Type.Array(Type.String()),
  canary: Type.Object({
    replicas: Type.Integer(),
    state: Type.Union(['none', 'starting', 'watching', 'passed', 'failed', 'ended'].map(p => Type.Literal(p))),
    since: Type.Optional(Type.String()),
    until: Type.Optional(Type.String())
  }),
  reason: Type.Optional(Type.String()),
  history: Type.Array(Type.Object({
    bundle: Type.String(),
    version: Type.Optional(Type.String()),
    outcome: Type.Union(['in-progress', 'succeeded', 'rolled-back', 'superseded'].map(p => Type.Literal(p))),
    reason: Type.Optional(Type.String()),
    startedAt: Type.Integer(),
    endedAt: Type.Optional(Type.Integer())
  }))
})

export const DeploymentViewSchema = Type.Object({
  id: Type.String(),
  model: Type.String({ description: 'the name its instances answer to under /v1/models/' }),
  replicas: Type.Integer(),
  spec: Type.Unknown({ description: 'the signed deployment spec' }),
  placement: Type.Union([Type.Object({
    scheduler: Type.String(),
    term: Type.Integer(),
    nodes: Type.Array(Type.String()),
    replicas: Type.Integer(),
    bundle: Type.String()
  }), Type.Null()], { description: 'where the elected scheduler placed it; null until it has' }),
  window: Type.Object({ active: Type.Boolean(), nextChange: Type.Union([Type.String(), Type.Null()]) }),
  instances: Type.Array(Type.Object({
    node: Type.String(),
    state: Type.String(),
    reason: Type.Optional(Type.String()),
    version: Type.Optional(Type.String()),
    bundle: Type.Optional(Type.String()),
    next: Type.Optional(Type.Object({ state: Type.String(), version: Type.Optional(Type.String()), bundle: Type.Optional(Type.String()), reason: Type.Optional(Type.String()) }, { description: 'during a model update: the new instance starting beside this one, or why it failed' }))
  })),
  running: Type.Integer(),
  update: Type.Union([ModelUpdateViewSchema, Type.Null()], { description: 'the current or last model update (rolling, canary, rollback); null when the model never changed' }),
  createdBy: Type.Union([Type.String(), Type.Null()]),
  createdAt: Type.Union([Type.Integer(), Type.Null()]),
  endpoints: Type.Array(Type.Object({ node: Type.String(), url: Type.String() }), { description: 'POST {"instances": [...]} to any of these' }),
  predict: Type.Optional(Type.String({ description: 'the same through the coordinator (service predict)' }))
}, { $id: 'Deployment' })

const tags = ['deployments']
const config = { service: 'deployments' as const }

/**
 * Deployments: the coordinator validates a spec as the agents will, signs
 * it with the fleet key and writes it to the registry; the mesh schedules
 * and runs it from there, with or without the coordinator.
 */
export async function deploymentRoutes (app: FastifyInstance, { ctx }: { ctx: CoordinatorContext }): Promise<void> {
  const deployments = ctx.deployments
  if (deployments == null) return
  // the coordinator's own predict proxy, as the caller reached the coordinator
  const withProxy = <T extends { model: string }>(d: T, base: string): T & { predict: string } => ({ ...d, predict: `${base}/api/v1/models/${d.model}:predict` })
  const baseOf = (request: { protocol: string, host: string }): string => `${request.protocol}://${request.host}`

  app.post<{ Body: Static<typeof DeploymentSpecSchema> }>('/api/v1/deployments', {
    config,
    schema: {
      tags,
      summary: 'Create a deployment: the spec is validated, signed with the fleet key and written to the mesh registry',
      description: 'The body is a deployment spec: id, model {name, version} or {digest}, replicas, placement {role, nodes, labels, sensorTypes, policy}, window {start, end} or schedule {cron, durationSec, timezone}, autoscale, canary {replicas | percent, durationSec} and update {maxErrorPct, minPredicts, availableTimeoutSec} for model updates, instance (input, rules, actions over the bundle\'s config.json). 409 when the id exists; 400 naming the field otherwise.',
      querystring: NoQuery,
      body: DeploymentSpecSchema,
      response: { 201: Type.Ref('Deployment'), ...errorResponses(400, 401, 403, 409) }
    }
  }, async (request, reply) => {
    const created = await deployments.create(request.body as Record<string, unknown>, ownerOf(request))
    return await reply.code(201).send(withProxy(created, baseOf(request)))
  })

  app.get('/api/v1/deployments', {
    config,
    schema: { tags, summary: 'Every deployment with placement, window, instances per node and endpoints', querystring: NoQuery, response: { 200: Type.Object({ deployments: Type.Array(Type.Ref('Deployment')), count: Type.Integer() }), ...errorResponses(401, 403) } }
  }, async request => {
    const list = deployments.list().map(d => withProxy(d, baseOf(request)))
    return { deployments: list, count: list.length }
  })

  app.get<{ Params: Static<typeof IdParams> }>('/api/v1/deployments/:id', {
    config,
    schema: { tags, summary: 'One deployment', params: IdParams, querystring: NoQuery, response: { 200: Type.Ref('Deployment'), ...errorResponses(400, 401, 403, 404) } }
  }, async request => withProxy(deployments.get(request.params.id), baseOf(request)))

  app.delete<{ Params: Static<typeof IdParams> }>('/api/v1/deployments/:id', {
    config,
    schema: { tags, summary: 'Delete a deployment (a signed tombstone): its instances stop everywhere', params: IdParams, querystring: NoQuery, response: { 204: Type.Null(), ...errorResponses(400, 401, 403, 404) } }
  }, async (request, reply) => {
    await deployments.delete(request.params.id, principalOf(request).name)
    return await reply.code(204).send()
  })
}
