import { Type } from '@sinclair/typebox'
import { errorResponses, NoQuery } from './schemas.ts'
import type { CoordinatorContext } from '../app.ts'
import type { FastifyInstance } from 'fastify'

const State = Type.Union([Type.Literal('alive'), Type.Literal('suspect'), Type.Literal('dead')])
const Nullable = <T extends ReturnType<typeof Type.Number>>(t: T) => Type.Union([t, Type.Null()])

const GatewayStatus = Type.Object({
  summary: Type.Object({ total: Type.Integer(), alive: Type.Integer(), suspect: Type.Integer(), dead: Type.Integer() }),
  gateways: Type.Array(Type.Object({
    peerId: Type.String(),
    role: Type.Union([Type.String(), Type.Null()]),
    labels: Type.Record(Type.String(), Type.String()),
    state: State,
    since: Type.Integer(),
    cpuPct: Nullable(Type.Number()),
    memUsedPct: Nullable(Type.Number()),
    rssBytes: Nullable(Type.Number()),
    load1: Nullable(Type.Number()),
    uptimeSec: Nullable(Type.Number()),
    /** when the node last wrote its health (it writes on change): not a sign of life, `state` is */
    lastHealthReport: Nullable(Type.Number()),
    clockOffsetSec: Nullable(Type.Number()),
    clockSkewed: Type.Boolean(),
    sensors: Type.Integer(),
    instances: Type.Object({ total: Type.Integer(), running: Type.Integer(), failed: Type.Integer() })
  }))
})

const ModelStatus = Type.Object({
  models: Type.Array(Type.Object({
    model: Type.String(),
    versions: Type.Array(Type.String()),
    states: Type.Record(Type.String(), Type.Integer()),
    instances: Type.Array(Type.Intersect([Type.Ref('Instance'), Type.Object({ nodeState: Type.String() })]))
  }))
})

const tags = ['monitoring']
const config = { service: 'nodes' as const }

/**
 * The seed's "/monitoring/gateway status" and "/monitoring/model status"
 * views. Both derive from node and instance records in the registry, so
 * they sit with the `nodes` service: operators watch them too.
 */
export async function monitoringRoutes (app: FastifyInstance, { ctx }: { ctx: CoordinatorContext }): Promise<void> {
  const { nodes } = ctx

  app.get('/api/v1/monitoring/gateways', {
    config,
    schema: { tags, summary: 'Gateway status: every gateway and server with liveness, load, memory, sensors and instances', querystring: NoQuery, response: { 200: GatewayStatus, ...errorResponses(401, 403) } }
  }, async () => nodes.gateways())

  app.get('/api/v1/monitoring/models', {
    config,
    schema: { tags, summary: 'Model status: every model with instances, per node and state (from instance/<peer>/<id>)', querystring: NoQuery, response: { 200: ModelStatus, ...errorResponses(401, 403) } }
  }, async () => ({ models: nodes.models() }))
}
