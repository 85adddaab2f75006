import { NoQuery } from './schemas.ts'
import type { CoordinatorContext } from '../app.ts'
import type { FastifyInstance } from 'fastify'

/**
 * `GET /metrics` for Prometheus (scrape it with an API token of an
 * operator: the numbers describe the fleet) and an unauthenticated
 * `GET /healthz` for load balancers and process supervisors.
 */
export async function metricsRoutes (app: FastifyInstance, { ctx }: { ctx: CoordinatorContext }): Promise<void> {
  app.get('/metrics', {
    config: { service: 'nodes' },
    schema: { tags: ['monitoring'], summary: 'Prometheus metrics of the coordinator and its embedded agent', querystring: NoQuery }
  }, async (_request, reply) => {
    const { contentType, body } = await ctx.metrics.render(ctx.prometheus)
    return await reply.type(contentType).send(body)
  })

  app.get('/healthz', {
    config: { public: true },
    schema: { tags: ['monitoring'], summary: 'Liveness of the coordinator process', querystring: NoQuery }
  }, async () => ({ ok: true, peerId: ctx.peerId, version: ctx.version }))
}
