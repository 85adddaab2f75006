import type { OwnershipRule } from './acl.ts'
import type { WriterQuotaInit } from './quota.ts'
import type { RefusalMetrics } from './refusals.ts'
import type { RegistryStore } from './store.ts'
import type { NodeClaims } from '../identity/certificate.ts'
import type { SyncResult } from '../../protocols/registry-sync/index.ts'
import type { GossipSub } from '@libp2p/gossipsub'
import type { PeerId, PrivateKey, Stream, StreamHandler } from '@libp2p/interface'
import type { KeyObject } from 'node:crypto'
import type { Logger } from 'pino'

// The registry's components, options and events (registry.ts re-exports them).

/** What the registry needs to know about fleet membership. */
export interface WriterTrust {
  readonly fleetPublicKey: KeyObject
  /** Claims of a valid certificate for this peer, when one is known. */
  claimsFor(peerId: string): NodeClaims | undefined
  /** Verify a certificate found in a `node/<peerId>` entry and remember it. */
  learnCertificate(cert: string, peerId: string): Promise<NodeClaims>
  /** True when `cert` is the certificate already learnt for `peerId` (nothing new to verify). */
  knowsCertificate(cert: string, peerId: string): boolean
  /** Connected and through the certificate exchange. */
  isVerified(peerId: string): boolean
  isDenied(peerId: string): boolean
  isRevoked(peerId: string): boolean
  /** The fleet revoked this peer: refuse it from now on, everywhere. */
  revoke(peerId: string, reason: string): void
  verifiedPeers(): PeerId[]
}

export interface RegistryMetrics extends RefusalMetrics {
  gossipIn(count: number): void
  gossipOut(count: number): void
  synced(result: SyncResult): void
}

export interface RegistryComponents {
  peerId: PeerId
  privateKey: PrivateKey
  pubsub: Pick<GossipSub, 'subscribe' | 'unsubscribe' | 'publish' | 'topicValidators' | 'addEventListener' | 'removeEventListener'>
  network: {
    handle(protocol: string, handler: StreamHandler, options?: { maxInboundStreams?: number }): Promise<void>
    unhandle(protocol: string): Promise<void>
    dialProtocol(peer: PeerId, protocol: string, options?: { signal?: AbortSignal }): Promise<Stream>
  }
  trust: WriterTrust
  store: RegistryStore
  logger: Logger
  metrics?: RegistryMetrics
}

export interface RegistryInit {
  /** Anti-entropy with one random verified peer this often. @default DEFAULT_SYNC_INTERVAL_MS */
  syncIntervalMs?: number
  /** Entries stamped further than this ahead of our clock are refused. @default DEFAULT_MAX_DRIFT_MS */
  maxClockDriftMs?: number
  /**
   * Entries of node-owned keys expire this long after their timestamp:
   * tombstones and the entries of nodes gone this long are collected, and
   * refused from anyone. Longer than any partition the fleet should heal
   * from. @default DEFAULT_RETENTION_MS
   */
  retentionMs?: number
  /** Per-writer limits on the keys each node owns. @default DEFAULT_QUOTA */
  quota?: WriterQuotaInit
  /** Ownership rules for keys a node may write without fleet authorisation. */
  rules?: readonly OwnershipRule[]
  /** @default Date.now */
  now?: () => number
}

export interface WriteOptions {
  /** Fleet authorisation (compact JWS) of exactly this write, for keys this node does not own. */
  auth?: string
}

export interface RegistryEvents {
  /** A peer finished an anti-entropy round with us. */
  synced: CustomEvent<{ peer: string, result: SyncResult }>
}
