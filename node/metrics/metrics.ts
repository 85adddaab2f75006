import { collectDefaultMetrics, Counter, Gauge, Registry as PromRegistry } from 'prom-client'
import type { SyncResult } from '../../protocols/registry-sync/index.ts'
import type { RegistryMetrics } from '../registry/registry.ts'
import type { PeerTrustMetrics } from '../trust/peer-trust.ts'
import type { BundleMetrics } from '../bundles/service.ts'
import type { MembershipMetrics, MemberState, SelfClock } from '../membership/membership.ts'
import type { ProbeResult } from '../membership/prober.ts'

/** How often the event-loop delay metric samples the loop (ms). */
const EVENT_LOOP_SAMPLE_MS = 100

/**
 * The agent's Prometheus metrics, on a registry of its own (never the global
 * one) so two agents in one process — as in tests — do not collide.
 */
export class AgentMetrics implements RegistryMetrics, PeerTrustMetrics, BundleMetrics, MembershipMetrics {
  readonly registry = new PromRegistry()
  readonly peers: Gauge
  readonly registryKeys: Gauge
  readonly #members: Gauge<'state'>
  readonly #probes: Counter<'result'>
  readonly #peerConnections: Counter<'direction'>
  readonly #swimFrames: Counter<'direction' | 'type'>
  readonly #swimBytes: Counter<'direction'>
  readonly #localHealth: Gauge
  readonly #clockSkewed: Gauge
  readonly #clockOffset: Gauge
  readonly #clockDisagreeing: Gauge
  readonly #recordMismatch: Counter<'field'>
  readonly #gossipIn: Counter
  readonly #gossipOut: Counter
  readonly #rejected: Counter<'reason'>
  readonly #denied: Counter<'reason'>
  readonly #writerRefused: Counter<'writer' | 'reason'>
  readonly #writerClockAhead: Gauge<'writer'>
  readonly #revokedPeers: Gauge
  readonly #syncs: Counter
  readonly #syncEntries: Counter<'direction'>
  readonly #corruptChunks: Counter<'provider'>
  readonly #chunks: Counter<'direction'>
  readonly #chunkBytes: Counter<'direction'>
  readonly #storeBytes: Gauge
  readonly #bundles: Gauge<'state'>
  readonly #invalidDeployments: Counter
  readonly #placements: Counter
  readonly #forwarded: Counter<'outcome'>
  readonly #diskFull: Gauge
  /** open `/v1/watch` event streams */
  readonly watchStreams: Gauge

  constructor (labels: Record<string, string> = {}) {
    const registers = [this.registry]
    this.registry.setDefaultLabels(labels)
    // prom-client samples event-loop delay with a 10 ms timer by default: 100 wake-ups a second,
    // ~0.5 % of a core on an idle agent. One sample per 100 ms still catches every stall worth a metric.
    collectDefaultMetrics({ register: this.registry, prefix: 'gatemesh_process_', eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS })
    this.peers = new Gauge({ name: 'gatemesh_peers', help: 'Connected peers that proved fleet membership', registers })
    this.#peerConnections = new Counter({ name: 'gatemesh_peer_connections_total', help: 'Peers connected anew that proved fleet membership, by who dialled (out: this node)', labelNames: ['direction'], registers })
    this.registryKeys = new Gauge({ name: 'gatemesh_registry_keys', help: 'Keys in the replicated registry, tombstones included', registers })
    this.#members = new Gauge({ name: 'gatemesh_members', help: 'Known members by liveness state (this node included)', labelNames: ['state'], registers })
    this.#probes = new Counter({ name: 'gatemesh_membership_probes_total', help: 'SWIM probes by outcome: ok (direct ack), indirect (ack through a relay), failed (accused), inconclusive (this node stalled meanwhile)', labelNames: ['result'], registers })
    this.#swimFrames = new Counter({ name: 'gatemesh_membership_frames_total', help: 'SWIM frames sent (out) and received (in), by type (sync: push-pull messages)', labelNames: ['direction', 'type'], registers })
    this.#swimBytes = new Counter({ name: 'gatemesh_membership_bytes_total', help: 'Bytes of SWIM frames and push-pull messages (payload, before stream and transport framing)', labelNames: ['direction'], registers })
    this.#localHealth = new Gauge({ name: 'gatemesh_local_health_score', help: 'Lifeguard local health score: 0 is healthy; higher stretches timeouts and defers verdicts', registers })
    this.#clockSkewed = new Gauge({ name: 'gatemesh_clock_skewed', help: '1 when this node\'s wall clock disagrees with most peers past the limit', registers })
    this.#clockOffset = new Gauge({ name: 'gatemesh_clock_offset_seconds', help: 'This node\'s wall clock minus its peers\' (median), from probe round trips', registers })
    this.#clockDisagreeing = new Gauge({ name: 'gatemesh_clock_disagreeing_peers', help: 'Peers whose clock differs from ours past the limit', registers })
    this.#recordMismatch = new Counter({ name: 'gatemesh_node_record_mismatch_total', help: 'Node records whose role or labels disagree with the writer\'s certificate (ignored)', labelNames: ['field'], registers })
    this.#gossipIn = new Counter({ name: 'gatemesh_gossip_messages_in_total', help: 'Registry deltas accepted from gossip', registers })
    this.#gossipOut = new Counter({ name: 'gatemesh_gossip_messages_out_total', help: 'Registry deltas published', registers })
    this.#rejected = new Counter({ name: 'gatemesh_rejected_messages_total', help: 'Wire messages and registry entries refused, by reason', labelNames: ['reason'], registers })
    this.#denied = new Counter({ name: 'gatemesh_denied_peers_total', help: 'Peers denied for failing the certificate exchange', labelNames: ['reason'], registers })
    this.#writerRefused = new Counter({ name: 'gatemesh_registry_refused_entries_total', help: 'Registry entries of certified writers refused, by writer and reason (clock drift, quota, malformed values)', labelNames: ['writer', 'reason'], registers })
    this.#writerClockAhead = new Gauge({ name: 'gatemesh_registry_writer_clock_ahead_ms', help: 'How far ahead of this node\'s clock the last entry refused for drift was, by writer', labelNames: ['writer'], registers })
    this.#revokedPeers = new Gauge({ name: 'gatemesh_revoked_peers', help: 'Peers the fleet revoked, enforced by this node', registers })
    this.#syncs = new Counter({ name: 'gatemesh_registry_syncs_total', help: 'Anti-entropy rounds completed', registers })
    this.#syncEntries = new Counter({ name: 'gatemesh_registry_sync_entries_total', help: 'Entries exchanged by anti-entropy', labelNames: ['direction'], registers })
    this.#corruptChunks = new Counter({ name: 'gatemesh_bundle_corrupt_chunks_total', help: 'Bundle chunks that failed verification on arrival, by the provider that sent them', labelNames: ['provider'], registers })
    this.#chunks = new Counter({ name: 'gatemesh_bundle_chunks_total', help: 'Verified bundle chunks fetched (in) and served (out)', labelNames: ['direction'], registers })
    this.#chunkBytes = new Counter({ name: 'gatemesh_bundle_bytes_total', help: 'Bytes of verified bundle chunks fetched (in) and served (out)', labelNames: ['direction'], registers })
    this.#storeBytes = new Gauge({ name: 'gatemesh_bundle_store_bytes', help: 'Bytes of bundles on disk, complete and partial', registers })
    this.#bundles = new Gauge({ name: 'gatemesh_bundles', help: 'Bundles held, by state', labelNames: ['state'], registers })
    this.#invalidDeployments = new Counter({ name: 'gatemesh_invalid_deployments_total', help: 'Deployment entries ignored because their spec is invalid', registers })
    this.#placements = new Counter({ name: 'gatemesh_placements_written_total', help: 'Placements written while this node was the scheduler', registers })
    this.#forwarded = new Counter({ name: 'gatemesh_predict_forwarded_total', help: 'Predict requests forwarded to replicas on other nodes, by outcome', labelNames: ['outcome'], registers })
    this.#diskFull = new Gauge({ name: 'gatemesh_disk_full', help: '1 while the disk under the data dir is full and writes are held back', registers })
    this.watchStreams = new Gauge({ name: 'gatemesh_watch_streams', help: 'Open /v1/watch event streams', registers })
  }

  diskFull (full: boolean): void { this.#diskFull.set(full ? 1 : 0) }
  members (counts: Record<MemberState, number>): void {
    for (const [state, n] of Object.entries(counts)) this.#members.set({ state }, n)
  }

  probe (result: ProbeResult): void { this.#probes.inc({ result }) }
  swimFrame (direction: 'in' | 'out', type: string, bytes: number): void {
    this.#swimFrames.inc({ direction, type })
    this.#swimBytes.inc({ direction }, bytes)
  }

  localHealth (score: number): void { this.#localHealth.set(score) }
  clockSelf (clock: SelfClock): void {
    this.#clockSkewed.set(clock.skewed ? 1 : 0)
    if (clock.offsetMs != null) this.#clockOffset.set(clock.offsetMs / 1000)
    this.#clockDisagreeing.set(clock.disagreeing)
  }

  recordMismatch (field: 'role' | 'labels'): void { this.#recordMismatch.inc({ field }) }

  invalidDeployment (): void { this.#invalidDeployments.inc() }
  placementWritten (): void { this.#placements.inc() }
  forwarded (outcome: 'ok' | 'retry' | 'failed'): void { this.#forwarded.inc({ outcome }) }

  gossipIn (count: number): void { this.#gossipIn.inc(count) }
  gossipOut (count: number): void { this.#gossipOut.inc(count) }
  rejected (reason: string): void { this.#rejected.inc({ reason }) }
  denied (reason: string): void { this.#denied.inc({ reason: reason.slice(0, 40) }) }
  verifiedPeers (count: number): void { this.peers.set(count) }
  peerConnected (outbound: boolean): void { this.#peerConnections.inc({ direction: outbound ? 'out' : 'in' }) }
  writerRefused (writer: string, reason: string): void { this.#writerRefused.inc({ writer, reason }) }
  clockOffset (writer: string, offsetMs: number): void { this.#writerClockAhead.set({ writer }, offsetMs) }
  revokedPeers (count: number): void { this.#revokedPeers.set(count) }
  synced (result: SyncResult): void {
    this.#syncs.inc()
    this.#syncEntries.inc({ direction: 'in' }, result.received)
    this.#syncEntries.inc({ direction: 'out' }, result.sent)
  }

  corruptChunk (provider: string): void { this.#corruptChunks.inc({ provider }) }
  chunkFetched (bytes: number): void {
    this.#chunks.inc({ direction: 'in' })
    this.#chunkBytes.inc({ direction: 'in' }, bytes)
  }

  chunkServed (bytes: number): void {
    this.#chunks.inc({ direction: 'out' })
    this.#chunkBytes.inc({ direction: 'out' }, bytes)
  }

  storeBytes (bytes: number, bundles: { complete: number, partial: number }): void {
    this.#storeBytes.set(bytes)
    this.#bundles.set({ state: 'complete' }, bundles.complete)
    this.#bundles.set({ state: 'partial' }, bundles.partial)
  }

  async render (): Promise<{ contentType: string, body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() }
  }
}
