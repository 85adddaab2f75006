import { Type, type Static } from '@sinclair/typebox'
import { principalOf } from '../auth/plugin.ts'
import { NotFoundError, UnavailableError } from '../errors.ts'
import { errorResponses, NoQuery } from './schemas.ts'
import type { CoordinatorContext } from '../app.ts'
import type { NodeView } from '../nodes/monitoring.ts'
import type { FastifyInstance } from 'fastify'

const NodesQuery = Type.Object({
  role: Type.Optional(Type.Union([Type.Literal('gateway'), Type.Literal('server'), Type.Literal('coordinator')])),
  state: Type.Optional(Type.Union([Type.Literal('alive'), Type.Literal('suspect'), Type.Literal('dead')])),
  /** `key=value`; repeat for several (all must match) */
  label: Type.Optional(Type.Array(Type.String({ pattern: '^[A-Za-z0-9._-]+=[A-Za-z0-9._-]*$', maxLength: 128 }), { maxItems: 16 })),
  /** nodes with at least one sensor of this type */
  sensorType: Type.Optional(Type.String({ minLength: 1, maxLength: 64 }))
}, { additionalProperties: false })

const NodeParams = Type.Object({ peerId: Type.String({ minLength: 10, maxLength: 128, pattern: '^[1-9A-HJ-NP-Za-km-z]+$' }) }, { additionalProperties: false })

const RevokeBody = Type.Object({
  /** why, kept with the revocation for whoever reads it later */
  reason: Type.Optional(Type.String({ maxLength: 512 }))
}, { additionalProperties: false })

const RevocationSchema = Type.Object({
  peerId: Type.String(),
  reason: Type.String(),
  revokedAt: Type.Integer(),
  by: Type.String()
})

const NodesList = Type.Object({ nodes: Type.Array(Type.Ref('Node')), count: Type.Integer() })

const JSON_TYPE = 'application/json; charset=utf-8'
const tags = ['nodes']
const config = { service: 'nodes' as const }
const adminOnly = { service: 'nodes' as const, roles: ['admin' as const] }

function matches (n: NodeView, q: Static<typeof NodesQuery>): boolean {
  if (q.role != null && n.role !== q.role) return false
  if (q.state != null && n.state !== q.state) return false
  if (q.sensorType != null && !n.sensors.some(s => s.type === q.sensorType)) return false
  for (const pair of q.label ?? []) {
    const eq = pair.indexOf('=')
    if (n.labels[pair.slice(0, eq)] !== pair.slice(eq + 1)) return false
  }
  return true
}

/** Gateways and servers (and coordinators) with role, labels, liveness, health and sensors. */
export async function nodeRoutes (app: FastifyInstance, { ctx }: { ctx: CoordinatorContext }): Promise<void> {
  const { nodes } = ctx

  app.get<{ Querystring: Static<typeof NodesQuery> }>('/api/v1/nodes', {
    config,
    schema: {
      tags,
      summary: 'Every node of the mesh with role, labels, state, health and sensors',
      description: 'Filters combine with AND. Live changes: GET /api/v1/events.',
      querystring: NodesQuery,
      response: { 200: NodesList, ...errorResponses(400, 401, 403) }
    }
  }, async (request, reply) => {
    const q = request.query
    const filtered = q.role != null || q.state != null || q.label != null || q.sensorType != null
    // the unfiltered list is kept serialised: the common request costs a string copy
    if (!filtered) return await reply.type(JSON_TYPE).send(nodes.json())
    const list = nodes.list().filter(n => matches(n, q))
    return await reply.type(JSON_TYPE).send(JSON.stringify({ nodes: list, count: list.length }))
  })

  app.get<{ Params: Static<typeof NodeParams> }>('/api/v1/nodes/:peerId', {
    config,
    schema: {
      tags,
      summary: 'One node with its model instances',
      params: NodeParams,
      querystring: NoQuery,
      response: { 200: Type.Object({ node: Type.Ref('Node'), instances: Type.Array(Type.Ref('Instance')) }), ...errorResponses(400, 401, 403, 404) }
    }
  }, async (request) => {
    const node = nodes.get(request.params.peerId)
    if (node == null) throw new NotFoundError(`no node ${request.params.peerId}`)
    return { node, instances: nodes.instances(node.peerId) }
  })

  app.post<{ Params: Static<typeof NodeParams>, Body: Static<typeof RevokeBody> }>('/api/v1/nodes/:peerId/revoke', {
    config: adminOnly,
    schema: {
      tags,
      summary: 'Revoke a node: every agent cuts it off at once, for good',
      description: 'Signs `revoked/<peerId>` with the fleet key and writes it to the mesh. Every agent hangs up on the node, refuses it at the connection gater and in every validator, drops what it wrote, and keeps the revocation across restarts; agents that were offline learn it when they reconnect. The node cannot renew its certificate. There is no undo: re-enroll the device with a new identity. Revoking a revoked node answers 200 with the first revocation.',
      params: NodeParams,
      querystring: NoQuery,
      body: RevokeBody,
      response: { 200: RevocationSchema, 201: RevocationSchema, ...errorResponses(400, 401, 403, 503) }
    }
  }, async (request, reply) => {
    if (ctx.revocations == null) throw new UnavailableError('revocation needs the coordinator\'s mesh agent')
    const { revocation, created } = await ctx.revocations.revoke(request.params.peerId, { reason: request.body?.reason ?? '', by: principalOf(request).name })
    return await reply.code(created ? 201 : 200).send(revocation)
  })

  app.get('/api/v1/revocations', {
    config,
    schema: {
      tags,
      summary: 'Nodes the fleet revoked',
      querystring: NoQuery,
      response: { 200: Type.Object({ revocations: Type.Array(RevocationSchema), count: Type.Integer() }), ...errorResponses(401, 403) }
    }
  }, async () => {
    const revocations = ctx.revocations?.list() ?? []
    return { revocations, count: revocations.length }
  })
}
