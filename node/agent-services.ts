import { join } from 'node:path'
import { BundleService } from './bundles/service.ts'
import { NODE_FILES, type NodeIdentity } from './identity/node-dir.ts'
import { LogQueryService } from './logs/log-query-service.ts'
import { Connector } from './membership/connector.ts'
import { HealthReporter, HealthSampler } from './membership/health.ts'
import { levelIncarnationStore } from './membership/membership.ts'
import { membership } from './membership/service.ts'
import { meshNetwork } from './mesh/network.ts'
import { servicePart } from './mesh/part.ts'
import { registry } from './registry/service.ts'
import { HealthRelay } from './registry/relay.ts'
import { LevelRegistryStore } from './registry/store.ts'
import { ReleaseService } from './release/service.ts'
import { LocalRuntime } from './runtime/local.ts'
import { validateInstanceOverrides } from './scheduler/instance-check.ts'
import { winningPlacement } from './scheduler/placements.ts'
import { predictRouter } from './scheduler/router-service.ts'
import { scheduling } from './scheduler/service.ts'
import { peerTrust } from './trust/service.ts'
import { CertificateRenewal, writeCertificateFile } from './trust/renewal.ts'
import { zoneOf } from '../protocols/registry/zones.ts'
import type { AgentServices } from './agent.ts'
import type { LogStore } from './logs/log-store.ts'
import type { MeshComponentsOf } from './mesh/libp2p.ts'
import type { AgentMetrics } from './metrics/metrics.ts'
import type { Database } from './store/db.ts'
import type { Logger } from 'pino'

export interface AgentServicesInit {
  dataDir: string
  identity: NodeIdentity
  db: Database
  logger: Logger
  metrics: AgentMetrics
  logs: LogStore
  /** write `node/<self>` */
  announce: () => Promise<void>
  /** end the process (a restart into a new release) */
  exit: (code: number, reason: string) => void
}

type C = MeshComponentsOf<AgentServices>

/**
 * The agent's parts as services of its libp2p node. libp2p builds them in
 * the order listed here (each is built from those before it) and starts
 * each in the order its `after` / dependencies give; they stop in reverse.
 * Why each waits for what it waits for:
 *
 * - logQuery (after the registry): answers the coordinator's log searches.
 * - trust (`beforeStart`): verifies this node's own certificate (an agent
 *   with a bad one would only be refused everywhere) and answers the
 *   certificate exchange before any connection exists.
 * - registry (`beforeStart` after trust, then `afterStart`): loads from disk
 *   against the trust's certificates, so the revocations stored there are
 *   enforced before the first connection; subscribes once gossipsub runs.
 * - scheduling (`beforeStart`): loads the operator's drain/evict state,
 *   which the first `node/<self>` carries.
 * - local (after the registry): instances and devices read deployments and
 *   write their states; then the first `node/<self>` (sensors, backend,
 *   certificate, drain state), which peers need to reach and trust us.
 * - membership (after local): starts with `node/<self>` written, as it
 *   reads the node records and signs our addresses into its alive claim.
 * - health, connector, bundles (after membership): health reports local
 *   instances; the connector dials the members membership found; bundles
 *   serve and fetch over verified connections.
 * - router (after local and membership): answers forwarded predicts from
 *   local instances and forwards to replicas membership holds alive.
 * - scheduling (after local, bundles and router): the reconciler runs
 *   instances in the local runtime and pulls their bundles, and an instance
 *   it starts is reachable from other nodes through the router at once.
 * - relay (after scheduling): health goes to the zone's scheduler the
 *   election names, and as the scheduler this node relays its members'.
 * - releases (after scheduling): a rollout checks the placements the
 *   election holds valid. renewal (after releases): last, it re-announces
 *   a renewed certificate.
 */
export function agentServices (init: AgentServicesInit): { [K in keyof AgentServices]: (components: C) => AgentServices[K] } {
  const { dataDir, identity, db, logger, metrics, logs, announce } = init
  const { config, peerId } = identity
  const { maxUnpackedBytes, ...bundleInit } = config.bundles
  const { health: healthInit, clockSkewLimitMs, ...swimInit } = config.membership
  return {
    trust: peerTrust({ fleetPublicKey: identity.fleetPublicKey, certificate: identity.certificate, logger: logger.child({ service: 'trust' }), metrics }),
    registry: registry({
      store: new LevelRegistryStore(db),
      logger: logger.child({ service: 'registry' }),
      metrics,
      syncIntervalMs: config.registry.syncIntervalMs,
      maxClockDriftMs: config.registry.maxClockDriftMs,
      retentionMs: config.registry.retentionMs,
      quota: config.registry.quota
    }),
    logQuery: servicePart({
      name: 'logQuery',
      after: ['registry'],
      create: (c: C) => new LogQueryService({ network: meshNetwork(c), trust: c.trust, store: logs, logger: logger.child({ service: 'logs' }) })
    }),
    bundles: servicePart({
      name: 'bundles',
      after: ['membership'],
      create: (c: C) => new BundleService({
        peerId: peerId.toString(),
        dataDir,
        db,
        registry: c.registry,
        network: meshNetwork(c),
        trust: c.trust,
        fleetPublicKey: identity.fleetPublicKey,
        logger: logger.child({ service: 'bundles' }),
        metrics
      }, { ...bundleInit, limits: { maxTotalBytes: maxUnpackedBytes } })
    }),
    local: servicePart({
      name: 'local',
      after: ['registry'],
      create: (c: C) => new LocalRuntime({
        peerId: peerId.toString(),
        dataDir,
        config,
        db,
        registry: c.registry,
        fleetKey: identity.fleetPublicKey,
        bundleZips: c.bundles.part,
        logger,
        prometheus: metrics.registry,
        onBackend: () => {
          announce().catch(err => { logger.warn({ service: 'agent', err: err.message }, 'announce failed') })
        }
      }),
      start: async local => {
        await local.start()
        await announce()
      }
    }),
    membership: membership({
      ...swimInit,
      clockSkewLimitMs: clockSkewLimitMs ?? Math.round(config.registry.maxClockDriftMs / 4),
      logger: logger.child({ service: 'membership' }),
      metrics,
      incarnations: levelIncarnationStore(db),
      after: ['local']
    }),
    health: servicePart({
      name: 'health',
      after: ['membership'],
      create: (c: C) => new HealthReporter({
        peerId: peerId.toString(),
        registry: c.registry,
        sampler: new HealthSampler(),
        instances: () => {
          const list = c.local.part.runtime.list()
          return { total: list.length, running: list.filter(i => i.state === 'running').length }
        },
        logger: logger.child({ service: 'membership' })
      }, healthInit)
    }),
    connector: servicePart({
      name: 'connector',
      after: ['membership'],
      create: (c: C) => new Connector({
        peerId,
        network: meshNetwork(c),
        members: () => c.membership.members(),
        // built after the connector, read when it ticks
        scheduler: () => (c.scheduling as C['scheduling'] | undefined)?.election.leader()?.peerId,
        neighbours: () => c.membership.neighbours(),
        logger: logger.child({ service: 'connector' })
      }, { targetPeers: config.connections.targetPeers, zonePeers: config.connections.zonePeers, zone: () => zoneOf(c.trust.claimsFor(peerId.toString())?.labels), bootstrap: config.bootstrap })
    }),
    scheduling: (c: C) => scheduling({
      role: config.role,
      // the certificate's zone, which the registry files this node's entries under (as the node record)
      labels: () => c.trust.claimsFor(peerId.toString())?.labels ?? config.labels,
      expectPeers: config.bootstrap.length > 0 || config.mdns,
      localHealth: () => c.membership.localHealth(),
      db,
      runtime: c.local.part.runtime,
      bundles: {
        ensure: async (digest) => {
          c.bundles.part.pull(digest)
          await c.bundles.part.waitFor(digest)
        }
      },
      logger,
      announce,
      parseOptions: { validateInstance: validateInstanceOverrides },
      metrics,
      scheduler: {
        ...config.scheduler,
        summary: {
          sampleIntervalMs: config.zones.summarySampleMs,
          maxIntervalMs: config.zones.summaryMaxIntervalMs,
          cpuChangePct: config.zones.summaryCpuChangePct,
          memoryChangePct: config.zones.summaryMemoryChangePct
        }
      },
      after: ['local', 'bundles', 'router']
    })(c),
    router: (c: C) => predictRouter({
      runtime: c.local.part.runtime,
      logger: logger.child({ service: 'router' }),
      metrics,
      maxBodyBytes: config.api.maxPredictBytes,
      timeoutMs: config.api.predictTimeoutMs,
      after: ['local']
    })(c),
    releases: servicePart({
      name: 'releases',
      after: ['scheduling'],
      create: (c: C) => new ReleaseService({
        peerId: peerId.toString(),
        dataDir,
        labels: config.labels,
        registry: c.registry,
        members: () => c.membership.members(),
        claimsOf: peer => c.trust.claimsFor(peer),
        verifiedPeers: () => c.trust.verifiedPeers().length,
        bundles: c.bundles.part,
        instances: () => c.local.part.runtime.list().map(i => ({ name: i.name, state: i.state })),
        placedHere: deployment => winningPlacement(c.registry, deployment, c.scheduling.election)?.nodes.includes(peerId.toString()) === true,
        fleetPublicKey: identity.fleetPublicKey,
        logger: logger.child({ service: 'releases' }),
        exit: init.exit
      }, { limits: { maxTotalBytes: maxUnpackedBytes } })
    }),
    relay: servicePart({
      name: 'relay',
      after: ['scheduling'],
      create: (c: C) => new HealthRelay({
        self: peerId.toString(),
        network: meshNetwork(c),
        registry: c.registry,
        leader: () => c.scheduling.election.leader()?.peerId,
        isLeader: () => c.scheduling.election.isLeader(),
        logger: logger.child({ service: 'registry' })
      })
    }),
    renewal: servicePart({
      name: 'renewal',
      after: ['releases'],
      create: (c: C) => new CertificateRenewal({
        peerId,
        trust: c.trust,
        network: meshNetwork(c),
        save: async cert => { await writeCertificateFile(join(dataDir, NODE_FILES.certificate), cert) },
        announce,
        logger: logger.child({ service: 'trust' })
      }, { renewAfterFraction: config.trust.renewAfterFraction, checkIntervalMs: config.trust.renewCheckIntervalMs })
    })
  }
}
