/**
 * A misbehaving peer for integration tests, built from the real modules but
 * without the agent's own safety checks: it starts whatever certificate and
 * network key its directory holds, writes registry entries, and
 *
 *   --garbage          sends malformed frames on every protocol of ours
 *   --forge KEY        writes a key it does not own, with no authorisation
 *   --poison           sends entries stamped [now+50 s, 2^31] and [now+50 s, 2^31-1]
 *                      (HLC poisoning), by gossip and anti-entropy
 *   --flood N          writes N keys of --flood-bytes (default 60 KiB) under its own prefix
 *   --nested DEPTH     its node record carries a sensor whose `geo` nests DEPTH levels
 *   --member           also runs real SWIM membership, so peers see it alive
 *   --record JSON      merges fields into the node record it writes about itself
 *                      (e.g. a role or labels its certificate does not give it)
 *   --own KEY=JSON     writes a key it does own (its own scheduler claim, its own
 *                      placements) with whatever value it likes, `$self` standing
 *                      for its peer id, every --every ms (default 500): what a
 *                      stolen gateway can gossip
 *
 *   node test/helpers/rogue.ts --data DIR [mode ...]
 *
 * Attack entries travel by gossip and are served to (and pushed at) every
 * peer through registry-sync, as a modified agent would.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { lpStream } from '@libp2p/utils'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { loadNodeDir } from '../../node/identity/node-dir.ts'
import { createLogger } from '../../node/logs/logger.ts'
import { createMesh } from '../../node/mesh/libp2p.ts'
import { Registry } from '../../node/registry/registry.ts'
import { MemoryRegistryStore } from '../../node/registry/store.ts'
import { signEntry } from '../../node/registry/entry.ts'
import { PeerTrust } from '../../node/trust/peer-trust.ts'
import { CERT_PROTOCOL } from '../../protocols/cert-exchange/index.ts'
import { answerSync, SYNC_PROTOCOL, syncWith, type SyncReplica } from '../../protocols/registry-sync/index.ts'
import { deltaCodec, REGISTRY_TOPIC } from '../../protocols/registry/delta.ts'
import { topicFor, zoneOf } from '../../protocols/registry/zones.ts'
import type { WireEntry } from '../../protocols/registry/wire.ts'

const { values } = parseArgs({
  options: {
    data: { type: 'string' },
    garbage: { type: 'boolean' },
    forge: { type: 'string' },
    poison: { type: 'boolean' },
    flood: { type: 'string' },
    'flood-bytes': { type: 'string' },
    nested: { type: 'string' },
    member: { type: 'boolean' },
    record: { type: 'string' },
    own: { type: 'string', multiple: true },
    every: { type: 'string' }
  }
})
const recordFields = values.record == null ? {} : JSON.parse(values.record) as Record<string, unknown>
const dir = values.data!
const id = await loadNodeDir(dir)
const self = id.peerId.toString()
const { logger } = createLogger({ node: self, dir: join(dir, 'logs'), stdout: false, level: 'debug' })
const trust = new PeerTrust({ peerId: id.peerId, logger }, { fleetPublicKey: id.fleetPublicKey, certificate: id.certificate })
const mesh = await createMesh({ privateKey: id.privateKey, networkKey: id.networkKey, listen: id.config.listen, bootstrap: id.config.bootstrap, gater: trust.gater(), version: 'rogue' })
trust.attach(mesh)
// its own registry has no quota to speak of: it is the one flooding
const registry = new Registry({ peerId: id.peerId, privateKey: id.privateKey, pubsub: mesh.services.pubsub, network: mesh, trust, store: new MemoryRegistryStore(), logger }, { quota: { maxKeys: 1e9, maxBytes: 1e12, entriesPerSec: 1e9, burst: 1e9 } })
await trust.start()
await mesh.start()
await registry.start()
// our own certificate may be bad; trust it locally anyway so we can write
trust.learnCertificate(id.certificate, self).catch(() => {})
;(trust as any).claimsFor = () => ({ sub: self, role: 'gateway', labels: {}, fleet: 'x', iat: 0, exp: 2 ** 40 })
if (values.member === true) {
  // loaded only when asked for: a rogue started from sources on a busy machine is slow enough already
  const { Membership } = await import('../../node/membership/membership.ts')
  const { Libp2pSwimTransport } = await import('../../node/membership/transport.ts')
  const membership = new Membership({
    peerId: id.peerId,
    privateKey: id.privateKey,
    registry,
    trust,
    transport: new Libp2pSwimTransport({ network: mesh, trust, logger }),
    addresses: () => mesh.getMultiaddrs().map(String),
    logger
  })
  await membership.start()
}

const report: Record<string, unknown> = { peerId: self, sent: [] as string[] }
const sent = report.sent as string[]

/** Entries no honest agent would write, served beside (and over) the registry's own. */
const attack = new Map<string, WireEntry>()
const replica: SyncReplica = {
  entries: () => [...[...registry.wireEntries()].filter(e => !attack.has(e.k)), ...attack.values()],
  merge: async entries => { await registry.merge(entries) }
}
await mesh.unhandle(SYNC_PROTOCOL)
await mesh.handle(SYNC_PROTOCOL, (stream) => { answerSync(stream, replica).catch(() => {}) }, { maxInboundStreams: 8 })

/** Gossip `entries` in deltas of up to 1000 KiB, each on the topic an agent would use (zone-local keys on the zone's). */
async function publish (entries: WireEntry[]): Promise<void> {
  let batch: WireEntry[] = []
  let size = 0
  let topic = REGISTRY_TOPIC
  const flush = async (): Promise<void> => {
    if (batch.length === 0) return
    await mesh.services.pubsub.publish(topic, deltaCodec.encode({ entries: batch })).then(() => sent.push(`gossip:${batch.length}`), (err: Error) => sent.push(`gossip:failed:${err.message}`))
    batch = []
    size = 0
    // paced, so the flood leaves through gossipsub's outbound buffer instead of overflowing it here
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  for (const e of entries) {
    const s = JSON.stringify(e).length
    const to = topicFor(e.k, zoneOf(id.config.labels))
    if (size + s > 1000 * 1024 || batch.length === 256 || to !== topic) await flush()
    topic = to
    batch.push(e)
    size += s
  }
  await flush()
}

const nodeRecord = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({ role: 'gateway', labels: {}, addresses: mesh.getMultiaddrs().map(String), sensors: [], backend: null, version: 'rogue', cert: id.certificate, startedAt: Date.now(), ...extra })

async function makeAttack (): Promise<WireEntry[]> {
  const made: WireEntry[] = []
  const add = async (k: string, v: string | null, t: [number, number]): Promise<void> => {
    const e = await signEntry(id.privateKey, { k, v, t, w: self })
    attack.set(k, e)
    made.push(e)
  }
  const now = Date.now()
  if (values.poison === true) {
    // valid by the wire schema, 50 s ahead and at the counter's maximum: stored, never adopted
    await add(`instance/${self}/poison-max`, '{"poison":"max"}', [now + 50_000, 2 ** 31 - 1])
    // past the schema: refused wherever it is decoded. Gossiped alone (in one frame with others it
    // would take them down with it); older versions adopted exactly this counter
    const over = await signEntry(id.privateKey, { k: `instance/${self}/poison-over`, v: '{"poison":"over"}', t: [now + 50_000, 2 ** 31], w: self })
    await mesh.services.pubsub.publish(topicFor(over.k, zoneOf(id.config.labels)), deltaCodec.encode({ entries: [over] }))
      .then(() => sent.push('gossip:poison-over'), (err: Error) => sent.push(`gossip:poison-over:failed:${err.message}`))
  }
  if (values.nested != null) {
    const depth = Number(values.nested)
    const geo = '['.repeat(depth) + ']'.repeat(depth)
    const record = JSON.stringify(nodeRecord()).replace('"sensors":[]', `"sensors":[{"id":"s1","type":"temperature","geo":${geo}}]`)
    await add(`node/${self}`, record, [now, 0])
  }
  if (values.flood != null) {
    const n = Number(values.flood)
    const bytes = Number(values['flood-bytes'] ?? 60 * 1024)
    const filler = JSON.stringify('x'.repeat(bytes - 2))
    for (let i = 0; i < n; i++) await add(`instance/${self}/flood-${i}`, filler, [now, i])
  }
  return made
}

async function dialBootstrap (): Promise<void> {
  for (const a of id.config.bootstrap) await mesh.dial(multiaddr(a), { signal: AbortSignal.timeout(3000) }).catch(() => {})
}

async function rawFrame (peer: string, protocol: string, bytes: Uint8Array, prefixed: boolean): Promise<void> {
  try {
    const stream = await mesh.dialProtocol(peerIdFromString(peer), protocol, { signal: AbortSignal.timeout(3000) })
    if (prefixed) await lpStream(stream, { maxDataLength: 64 * 1024 * 1024 }).write(bytes)
    else stream.send(bytes)
    await stream.close().catch(() => {})
    sent.push(`${protocol}:${bytes.byteLength}`)
  } catch (err: any) {
    sent.push(`${protocol}:failed:${err.message}`)
  }
}

const own = (values.own ?? []).map(kv => {
  const at = kv.indexOf('=')
  return { key: kv.slice(0, at).replaceAll('$self', self), json: kv.slice(at + 1).replaceAll('$self', self) }
})
if (own.length > 0) {
  setInterval(() => {
    for (const { key, json } of own) registry.set(key, JSON.parse(json)).catch(() => {})
  }, Number(values.every ?? 500))
}

const attacking = values.poison === true || values.flood != null || values.nested != null
let round = 0
const syncing = new Set<string>()
setInterval(() => {
  round++
  void dialBootstrap()
  if (values.nested == null) registry.set(`node/${self}`, nodeRecord(recordFields)).catch(() => {})
  registry.set(`instance/${self}/rogue`, { round }).catch(() => {})
  if (values.forge != null) {
    // a write to a key it does not own, with no fleet authorisation
    signEntry(id.privateKey, { k: values.forge, v: JSON.stringify({ forged: round }), t: [Date.now(), 0], w: self })
      .then(async e => await mesh.services.pubsub.publish(REGISTRY_TOPIC, deltaCodec.encode({ entries: [e] })))
      .catch(() => {})
  }
  for (const peer of trust.verifiedPeers()) {
    const id = peer.toString()
    // one session per peer at a time: a flood takes a while to push
    if (syncing.has(id)) continue
    syncing.add(id)
    mesh.dialProtocol(peer, SYNC_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
      .then(async stream => await syncWith(stream, replica, { timeoutMs: 120_000 }))
      .then(async r => {
        if (!attacking) return
        sent.push(`sync:${r.sent}`)
        await writeFile(join(dir, 'rogue.json'), JSON.stringify(report))
      }, async (err: Error) => {
        if (!attacking) return
        sent.push(`sync:failed:${err.message}`)
        await writeFile(join(dir, 'rogue.json'), JSON.stringify(report))
      })
      .finally(() => { syncing.delete(id) })
  }
  // fresh attack entries every few rounds, so they keep winning over what they replace
  if (attacking && round % 4 === 1) {
    makeAttack()
      .then(async entries => { await publish(entries) })
      .then(async () => { await writeFile(join(dir, 'rogue.json'), JSON.stringify(report)) })
      .catch((err: Error) => { sent.push(`attack:failed:${err.message}`) })
  }
}, 500)

if (values.garbage === true) {
  const target = id.config.bootstrap[0]!.split('/p2p/')[1]!
  setTimeout(() => {
    void (async () => {
      const enc = new TextEncoder()
      await rawFrame(target, SYNC_PROTOCOL, crypto.getRandomValues(new Uint8Array(100)), true)
      await rawFrame(target, SYNC_PROTOCOL, new Uint8Array([1, ...enc.encode('{"type":"digest","buckets":[')]), true)
      await rawFrame(target, SYNC_PROTOCOL, new Uint8Array([1, ...enc.encode('{"type":"entries","entries":[{"k":"../x"}]}')]), true)
      await rawFrame(target, SYNC_PROTOCOL, new Uint8Array(2 * 1024 * 1024).fill(0x41), true)
      await rawFrame(target, SYNC_PROTOCOL, new Uint8Array([0xff, 0xff, 0xff, 0xff, 0x0f]), false)
      await rawFrame(target, CERT_PROTOCOL, enc.encode('not a certificate'), true)
      for (const data of [crypto.getRandomValues(new Uint8Array(64)), new Uint8Array([1, ...enc.encode('{"entries":[]}')]), new Uint8Array([9, 1, 2])]) {
        await mesh.services.pubsub.publish(REGISTRY_TOPIC, data).then(() => sent.push('gossip'), () => sent.push('gossip:failed'))
      }
      await writeFile(join(dir, 'rogue.json'), JSON.stringify(report))
    })()
  }, 3000)
}
