import type { FastifyInstance } from 'fastify'
import type { AgentView } from '../server.ts'

export async function healthRoutes (app: FastifyInstance, { agent }: { agent: AgentView }): Promise<void> {
  // liveness probes (systemd, a load balancer) need no token, wherever they come from
  app.get('/healthz', { config: { access: 'public' } }, async () => ({ ok: true, peerId: agent.peerId }))

  app.get('/metrics', async (_request, reply) => {
    agent.metrics.registryKeys.set(agent.registry.size)
    const { contentType, body } = await agent.metrics.render()
    return await reply.type(contentType).send(body)
  })
}
