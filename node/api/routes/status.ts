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
      uptimeSec: Math.round(process.uptime()),
      ...(agent.membership == null ? {} : { localHealth: agent.membership.localHealth(), clock: agent.membership.clock() })
    },
    members: agent.members(),
    registry: { size: agent.registry.size },
    // this node keeps the zone-local state of `following` only; other zones it sees through their summaries
    ...(agent.zones == null ? {} : { zones: agent.zones() }),
    denied: agent.deniedPeers(),
    ...(agent.disk == null ? {} : { disk: agent.disk.state() }),
    ...(agent.local == null
      ? {}
      : {
          runtime: {
            backend: agent.local.runtime.backend,
            backendInUse: agent.local.runtime.backendInUse,
            // per runtime family: which backend its models run on (e.g. onnx: onnx-wasm where the native binding cannot load)
            backends: agent.local.runtime.backends(),
            instances: agent.local.runtime.list().map(i => ({ name: i.name, version: i.version, state: i.state, format: i.format, backend: i.backend ?? null }))
          },
          sensors: agent.local.devices.state(),
          outbox: { pending: agent.local.outbox.size },
          // what a bundle's action script can and cannot do here
          scripts: { isolation: agent.local.scriptIsolation ?? 'decided when the first action script runs' }
        })
  }))
}
