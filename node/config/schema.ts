import { Type, type Static } from '@sinclair/typebox'
import { ActuatorsSchema, NotificationsSchema, OutboxSchema, RuntimeSchema, ScriptsSchema, SensorsSchema } from './runtime-schema.ts'

/** Label keys and values: what Kubernetes allows, roughly. */
const LabelKey = Type.String({ minLength: 1, maxLength: 63, pattern: '^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$' })
const LabelValue = Type.String({ maxLength: 63, pattern: '^[A-Za-z0-9._-]*$' })

export const LabelsSchema = Type.Record(LabelKey, LabelValue, { additionalProperties: false, maxProperties: 64 })

/**
 * The agent's `config.json`. Every object is closed (`additionalProperties:
 * false`) so a typo is an error naming the field rather than a silent default.
 */
export const ConfigSchema = Type.Object({
  role: Type.Union([Type.Literal('gateway'), Type.Literal('server'), Type.Literal('coordinator')]),
  labels: Type.Optional(LabelsSchema),
  /** libp2p listen multiaddrs. */
  listen: Type.Array(Type.String({ minLength: 1 }), { minItems: 1, default: ['/ip4/0.0.0.0/tcp/7400'] }),
  /** Addresses to advertise instead of the listen addresses. */
  announce: Type.Array(Type.String({ minLength: 1 }), { default: [] }),
  /** Multiaddrs with `/p2p/<peerId>` of peers to join through. */
  bootstrap: Type.Array(Type.String({ minLength: 1 }), { default: [] }),
  /** Find peers on the LAN with mDNS. */
  mdns: Type.Boolean({ default: false }),
  api: Type.Object({
    /** loopback unless `tls` is set: the API is this machine's, and a LAN address needs TLS (and the token on every route) */
    host: Type.String({ minLength: 1, maxLength: 255, default: '127.0.0.1' }),
    port: Type.Integer({ minimum: 0, maximum: 65535, default: 7401 }),
    /** serve HTTPS with this PEM certificate and key (paths relative to the node directory) */
    tls: Type.Optional(Type.Object({
      cert: Type.String({ minLength: 1, maxLength: 4096 }),
      key: Type.String({ minLength: 1, maxLength: 4096 })
    }, { additionalProperties: false })),
    /**
     * Largest predict request body, the one limit at every hop: this API,
     * the coordinator's predict (it uses its embedded agent's value) and
     * forwarding over the mesh. Past it a request is a 413 where it enters.
     */
    maxPredictBytes: Type.Integer({ minimum: 1024, maximum: 1024 ** 3, default: 16 * 1024 * 1024 }),
    /** A predict forwarded over the mesh must be answered within this long, plus a second per MiB of body. */
    predictTimeoutMs: Type.Integer({ minimum: 100, maximum: 600_000, default: 10_000 }),
    /** Open `/v1/watch` event streams at once; more are refused with 429. */
    maxWatchStreams: Type.Integer({ minimum: 1, maximum: 10_000, default: 32 })
  }, { additionalProperties: false, default: {} }),
  /** TensorFlow Serving's gRPC API (Predict, GetModelMetadata, GetModelStatus); a port in use is logged, not fatal. */
  grpc: Type.Object({
    enabled: Type.Boolean({ default: true }),
    /** loopback by default, like the HTTP API */
    host: Type.String({ minLength: 1, default: '127.0.0.1' }),
    port: Type.Integer({ minimum: 0, maximum: 65535, default: 7402 })
  }, { additionalProperties: false, default: {} }),
  /** SWIM failure detection with Lifeguard; see the README's "Membership protocol". */
  membership: Type.Object({
    /** Probe one member this often. */
    probeIntervalMs: Type.Integer({ minimum: 100, maximum: 60_000, default: 1000 }),
    /** Wait this long for a direct ack before asking others to probe (about the network's p99 round trip). */
    probeTimeoutMs: Type.Integer({ minimum: 10, maximum: 30_000, default: 500 }),
    /** Members asked to probe indirectly when a direct probe fails. */
    indirectChecks: Type.Integer({ minimum: 0, maximum: 16, default: 3 }),
    /** Probe only this many successors on a ring of members ordered by a hash of their ids; 0: every member in a shuffled round robin. */
    probeSuccessors: Type.Integer({ minimum: 0, maximum: 64, default: 3 }),
    /** Suspicion lasts at least mult · max(1, log10 N) probe intervals … */
    suspicionMult: Type.Number({ minimum: 0.1, maximum: 100, default: 1 }),
    /** … and at most this many times that, unless others confirm it. */
    suspicionMaxMult: Type.Number({ minimum: 1, maximum: 100, default: 6 }),
    /** Independent confirmations that bring suspicion down to its minimum. */
    suspicionConfirmations: Type.Integer({ minimum: 0, maximum: 32, default: 3 }),
    /** Each membership change is piggybacked mult · ⌈log10(N + 1)⌉ times. */
    retransmitMult: Type.Integer({ minimum: 1, maximum: 32, default: 4 }),
    /** Send pending changes this often … */
    gossipIntervalMs: Type.Integer({ minimum: 10, maximum: 60_000, default: 200 }),
    /** … to this many connected members. */
    gossipNodes: Type.Integer({ minimum: 1, maximum: 32, default: 3 }),
    /** Swap the whole member list with one member this often (longer past 32 members). */
    pushPullIntervalMs: Type.Integer({ minimum: 1000, maximum: 3_600_000, default: 30_000 }),
    /** Lifeguard: while this node is unhealthy its timeouts stretch up to this many times. */
    awarenessMaxMultiplier: Type.Integer({ minimum: 1, maximum: 64, default: 8 }),
    /** A clock further off than this is skewed. Default: a quarter of registry.maxClockDriftMs. */
    clockSkewLimitMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 86_400_000 })),
    /** `health/<self>` (cpu, memory, load, instances): written on change, not on every probe. */
    health: Type.Object({
      /** Sample this often. */
      sampleIntervalMs: Type.Integer({ minimum: 500, maximum: 3_600_000, default: 5000 }),
      /** Write at least this often, changed or not. */
      maxIntervalMs: Type.Integer({ minimum: 1000, maximum: 86_400_000, default: 60_000 }),
      /** A metric's change (CPU, memory, load) waits this long after the last write; instance counts go at once. */
      minIntervalMs: Type.Integer({ minimum: 0, maximum: 86_400_000, default: 20_000 }),
      /** Write when machine or process CPU moved this many points. */
      cpuChangePct: Type.Number({ minimum: 0, maximum: 100, default: 15 }),
      /** … or used memory moved this many points of the total. */
      memoryChangePct: Type.Number({ minimum: 0, maximum: 100, default: 5 }),
      /** … or the 1-minute load moved this much. */
      loadChange: Type.Number({ minimum: 0, maximum: 1000, default: 0.5 })
    }, { additionalProperties: false, default: {} })
  }, { additionalProperties: false, default: {} }),
  registry: Type.Object({
    /** Anti-entropy with one random peer this often. */
    syncIntervalMs: Type.Integer({ minimum: 500, maximum: 3_600_000, default: 15_000 }),
    /** Entries stamped further than this in the future are refused (and stamps more than half of it ahead are never adopted). */
    maxClockDriftMs: Type.Integer({ minimum: 1000, maximum: 86_400_000, default: 60_000 }),
    /** Tombstones and the entries of nodes gone this long are collected on every node and refused from anyone (at least 10 × maxClockDriftMs). */
    retentionMs: Type.Integer({ minimum: 600_000, maximum: 366 * 86_400_000, default: 72 * 3_600_000 }),
    /** What each node may make every peer store about itself (the keys it owns); excess is refused and counted. */
    quota: Type.Object({
      /** Live keys (tombstones count against the bytes). */
      maxKeys: Type.Integer({ minimum: 16, maximum: 10_000_000, default: 4096 }),
      /** Bytes of entries: keys, values, signatures, tombstones included. */
      maxBytes: Type.Integer({ minimum: 64 * 1024, maximum: 1024 ** 3, default: 4 * 1024 * 1024 }),
      /** Entries per second a writer may gossip, sustained (anti-entropy brings the rest later). */
      entriesPerSec: Type.Number({ exclusiveMinimum: 0, maximum: 100_000, default: 50 }),
      /** … and in one burst. */
      burst: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 1000 })
    }, { additionalProperties: false, default: {} })
  }, { additionalProperties: false, default: {} }),
  trust: Type.Object({
    /** Ask a coordinator for a fresh certificate once this fraction of the current one's lifetime has passed. */
    renewAfterFraction: Type.Number({ exclusiveMinimum: 0, maximum: 0.95, default: 0.7 }),
    /** Check the certificate's age (and retry a failed renewal) this often. */
    renewCheckIntervalMs: Type.Integer({ minimum: 1000, maximum: 86_400_000, default: 3_600_000 })
  }, { additionalProperties: false, default: {} }),
  scheduler: Type.Object({
    /** A scheduler's claim holds this long after each renewal; a killed scheduler is replaced after about this long. */
    leaseMs: Type.Integer({ minimum: 500, maximum: 60_000, default: 3000 }),
    /** The scheduler renews its claim this often (at most half the lease). */
    renewIntervalMs: Type.Integer({ minimum: 100, maximum: 30_000, default: 1000 }),
    /** A placed node with no instance pulling, starting or running after this long is placed around for a while. */
    progressDeadlineSec: Type.Integer({ minimum: 5, maximum: 86_400, default: 60 })
  }, { additionalProperties: false, default: {} }),
  /** Zones (the certificate's `zone` label): how a zone's scheduler sums the zone up for the others. */
  zones: Type.Object({
    /** The zone's scheduler summarises the zone this often … */
    summarySampleMs: Type.Integer({ minimum: 500, maximum: 3_600_000, default: 5000 }),
    /** … writes `zone/<zone>/<self>` when it changed meaningfully, and at least this often. */
    summaryMaxIntervalMs: Type.Integer({ minimum: 1000, maximum: 86_400_000, default: 30_000 }),
    /** What counts as meaningful: average CPU moved this many points … */
    summaryCpuChangePct: Type.Number({ minimum: 0, maximum: 100, default: 10 }),
    /** … or average used memory this many points (member and instance counts always do). */
    summaryMemoryChangePct: Type.Number({ minimum: 0, maximum: 100, default: 5 })
  }, { additionalProperties: false, default: {} }),
  connections: Type.Object({
    /** Keep at least this many peers connected when the registry knows of them. */
    targetPeers: Type.Integer({ minimum: 1, maximum: 100, default: 6 }),
    /** Of those, keep at least this many in this node's own zone (its zone's gossip needs them). */
    zonePeers: Type.Integer({ minimum: 0, maximum: 100, default: 3 }),
    /**
     * Open connections past which libp2p prunes. Every member of a zone keeps
     * a connection to the zone's scheduler (it hands it its health), so a
     * node that may become scheduler needs its zone's size and some more.
     */
    maxConnections: Type.Integer({ minimum: 8, maximum: 10_000, default: 256 })
  }, { additionalProperties: false, default: {} }),
  bundles: Type.Object({
    /** Bundles kept on disk, complete and partial; unreferenced ones are evicted past this. */
    maxStoreBytes: Type.Integer({ minimum: 1024 * 1024, default: 2 * 1024 ** 3 }),
    /** Cap on the rate this node serves chunks at (bytes/s); 0 is unlimited. */
    uploadBytesPerSec: Type.Integer({ minimum: 0, default: 0 }),
    /** Providers one pull fetches from at once. */
    maxProviders: Type.Integer({ minimum: 1, maximum: 64, default: 8 }),
    /** Chunk requests in flight per provider. */
    requestsPerProvider: Type.Integer({ minimum: 1, maximum: 64, default: 8 }),
    /** A provider must answer each chunk request within this long. */
    chunkTimeoutMs: Type.Integer({ minimum: 100, maximum: 600_000, default: 15_000 }),
    /** A pull gives up when no chunk arrives (or no provider answers) for this long. */
    stallTimeoutMs: Type.Integer({ minimum: 1000, maximum: 86_400_000, default: 600_000 }),
    /** Serve and advertise bundles to peers; false makes a download-only node (metered links). */
    share: Type.Boolean({ default: true }),
    /** Unpacked size limit for bundles this node accepts. */
    maxUnpackedBytes: Type.Integer({ minimum: 1024, default: 4 * 1024 ** 3 })
  }, { additionalProperties: false, default: {} }),
  memory: Type.Object({
    /** Hand the C heap's free pages back to the kernel (glibc's malloc_trim) this often; 0 never. */
    trimIntervalMs: Type.Integer({ minimum: 0, maximum: 3_600_000, default: 60_000 })
  }, { additionalProperties: false, default: {} }),
  logs: Type.Object({
    level: Type.Union(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'].map(l => Type.Literal(l)), { default: 'info' }),
    /** Rotate the log file past this size. */
    maxFileBytes: Type.Integer({ minimum: 4096, default: 10 * 1024 * 1024 }),
    /** Rotated files kept beside the current one. */
    files: Type.Integer({ minimum: 0, maximum: 100, default: 2 }),
    /** Also write logs to stdout. */
    stdout: Type.Boolean({ default: true }),
    /** Lines kept in the node's database for mesh-wide search; 0 keeps none. */
    retainEntries: Type.Integer({ minimum: 0, maximum: 10_000_000, default: 100_000 }),
    /** Bytes of lines kept for search. */
    retainBytes: Type.Integer({ minimum: 64 * 1024, maximum: 16 * 1024 ** 3, default: 32 * 1024 * 1024 }),
    /** Lines older than this are dropped from search. */
    retainHours: Type.Number({ exclusiveMinimum: 0, maximum: 24 * 3650, default: 168 })
  }, { additionalProperties: false, default: {} }),
  /** local sensors, advertised in `node/<self>` */
  sensors: SensorsSchema,
  /** local outputs for `gpio.write` actions */
  actuators: ActuatorsSchema,
  runtime: RuntimeSchema,
  outbox: OutboxSchema,
  notifications: NotificationsSchema,
  scripts: ScriptsSchema
}, { additionalProperties: false })

export type ConfigInput = Static<typeof ConfigSchema>
export type Config = ConfigInput & { labels: Record<string, string> }
