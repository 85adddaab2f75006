import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { agentBackend } from '../node/api/grpc/agent-backend.ts'
import { predictLocal } from '../node/runtime/serving.ts'
import type { Agent } from '../node/agent.ts'
import type { ServingBackend } from '../node/api/grpc/server.ts'
import type { Member } from '../node/membership/membership.ts'
import type { Registry } from '../node/registry/registry.ts'
import type { PlacementAuthority } from '../node/scheduler/placements.ts'
import type { DiskGuard } from '../node/store/disk-guard.ts'
import type { CertificateIssuer } from '../node/trust/renewal.ts'
import type { DeploymentsComponents } from './deployments/service.ts'
import type { RenewalServiceComponents } from './enrollment/renewal.ts'
import type { LogSearchComponents } from './logs/search.ts'
import type { NodesViewComponents } from './nodes/view.ts'
import type { RevocationsComponents } from './nodes/revocations.ts'
import type { RolloutsComponents } from './rollouts/service.ts'
import type { Stream } from '@libp2p/interface'
import type { Logger } from 'pino'
import type { Registry as PromRegistry } from 'prom-client'

/**
 * What the coordinator uses of the agent it embeds, and nothing more: the
 * agent's parts stay behind it. `embed(agent)` is the one place that reads
 * the agent; everything in coordinator/ goes through this.
 */
export interface EmbeddedAgent {
  readonly peerId: string
  readonly logger: Logger
  /** the disk under the data dir, which the coordinator's database writes to as well */
  readonly disk: DiskGuard
  /** the predict body limit (`api.maxPredictBytes`): one limit at every hop */
  readonly maxPredictBytes: number
  /** the agent's metrics, served on the coordinator's `/metrics` too */
  readonly prometheus: PromRegistry
  start(): Promise<void>
  stop(): Promise<void>
  /** this node's mesh addresses */
  addresses(): string[]
  /** the fleet's replicated state, as the coordinator's views read and write it */
  readonly registry: NodesViewComponents['registry'] & RevocationsComponents['registry'] & DeploymentsComponents['registry'] & RolloutsComponents['registry'] & Pick<Registry, 'value' | 'list'>
  /** live members and their state changes */
  readonly membership: { members(): readonly Member[], member(peerId: string): Member | undefined } & Pick<EventTarget, 'addEventListener' | 'removeEventListener'>
  /** whose placements count (the election) */
  readonly placements: PlacementAuthority
  readonly releases: RolloutsComponents['releases']
  /** the agent's bundle store: publish a signed bundle to the mesh, pull one, find it on disk */
  readonly bundles: RolloutsComponents['bundles'] & { publish(zip: string): Promise<unknown>, held(digest: string): boolean }
  /** the agent's own logs, searched in-process */
  readonly logs: LogSearchComponents['self']['store']
  /** protocol handlers on the mesh (certificate renewal for the fleet) */
  readonly network: RenewalServiceComponents['network']
  /** a stream to `peerId` over its open connection, or through its announced addresses */
  dial(peerId: string, addresses: string[], protocol: string, signal: AbortSignal): Promise<Stream>
  /** renew this node's own certificate by signing (the coordinator holds the fleet key) rather than asking */
  useCertificateIssuer(issuer: CertificateIssuer): void
  /** predict here when this node runs the model, or through a replica */
  predict(model: string, version: string | undefined, body: unknown, requestId?: string): Promise<{ status: number, body: unknown }>
  /** TensorFlow Serving's gRPC backend over the same models */
  grpcBackend(): ServingBackend
}

export function embed (agent: Agent): EmbeddedAgent {
  const { registry, membership, bundles, local, router, mesh } = agent
  return {
    peerId: agent.peerId,
    logger: agent.logger,
    disk: agent.disk,
    maxPredictBytes: agent.identity.config.api.maxPredictBytes,
    prometheus: agent.metrics.registry,
    start: async () => { await agent.start() },
    stop: async () => { await agent.stop() },
    addresses: () => agent.addresses(),
    registry,
    membership,
    placements: agent.scheduling.election,
    releases: agent.releases,
    bundles: {
      pull: digest => bundles.pull(digest),
      waitFor: async digest => await bundles.waitFor(digest),
      pathOf: digest => bundles.pathOf(digest),
      publish: async zip => await bundles.publish(zip),
      held: digest => bundles.store.get(digest)?.state === 'complete'
    },
    logs: agent.logs,
    network: mesh,
    dial: async (peerId, addresses, protocol, signal) => {
      const id = peerIdFromString(peerId)
      const addrs = addresses.map(a => multiaddr(a))
      // a connected peer is reached over its open connection; others through their announced addresses
      const target = mesh.getConnections(id).length > 0 || addrs.length === 0 ? id : addrs
      return await mesh.dialProtocol(target, protocol, { signal })
    },
    useCertificateIssuer: issuer => { agent.renewal.useIssuer(issuer) },
    predict: async (model, version, body, requestId) => {
      // the coordinator runs no instances itself, but its agent may one day
      if (local.runtime.has(model)) return { status: 200, body: await predictLocal(local.runtime, model, version, body, requestId) }
      return await router.predict(model, version, body, undefined, requestId)
    },
    grpcBackend: () => agentBackend({ runtime: local.runtime, router })
  }
}
