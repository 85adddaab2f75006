import type { FastifyInstance } from 'fastify'
import type { AgentView } from '../server.ts'

export async function statusRoutes (app: FastifyInstance, { agent }: { agent: AgentView }): Promise<void> {
  app.get('/v1/status', async () => ({
    self: {
      peerId: agent.peerId,
      role: agent.role,
      labels: agent.labels,
      version: agent.version,
      addresses: agent.addresses(),
      startedAt: agent.startedAt,
      uptimeSec: Math.round(process.uptime())
    },
    members: agent.members(),
    registry: { size: agent.registry.size },
    denied: agent.deniedPeers()
  }))
}
