/**
 * A misbehaving peer for integration tests, built from the real modules but
 * without the agent's own safety checks: it starts whatever certificate and
 * network key its directory holds, writes registry entries, and in
 * `--garbage` mode sends malformed frames on every protocol of ours.
 *
 *   node test/helpers/rogue.ts --data DIR [--garbage] [--forge KEY] [--own KEY=JSON ...] [--every MS]
 *
 * `--own` writes keys the rogue does own (its own scheduler claim, its own
 * placements) with whatever value it likes, `$self` standing for its peer
 * id, every `--every` ms (default 500): what a stolen gateway can gossip.
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
import { SYNC_PROTOCOL } from '../../protocols/registry-sync/index.ts'
import { deltaCodec, REGISTRY_TOPIC } from '../../protocols/registry/delta.ts'

const { values } = parseArgs({ options: { data: { type: 'string' }, garbage: { type: 'boolean' }, forge: { type: 'string' }, own: { type: 'string', multiple: true }, every: { type: 'string' } } })
const dir = values.data!
const id = await loadNodeDir(dir)
const self = id.peerId.toString()
const { logger } = createLogger({ node: self, dir: join(dir, 'logs'), stdout: false, level: 'debug' })
const trust = new PeerTrust({ peerId: id.peerId, logger }, { fleetPublicKey: id.fleetPublicKey, certificate: id.certificate })
const mesh = await createMesh({ privateKey: id.privateKey, networkKey: id.networkKey, listen: id.config.listen, bootstrap: id.config.bootstrap, gater: trust.gater(), version: 'rogue' })
trust.attach(mesh)
const registry = new Registry({ peerId: id.peerId, privateKey: id.privateKey, pubsub: mesh.services.pubsub, network: mesh, trust, store: new MemoryRegistryStore(), logger })
await trust.start()
await mesh.start()
await registry.start()
// our own certificate may be bad; trust it locally anyway so we can write
trust.learnCertificate(id.certificate, self).catch(() => {})
;(trust as any).claimsFor = () => ({ sub: self, role: 'gateway', labels: {}, fleet: 'x', iat: 0, exp: 2 ** 40 })

const report: Record<string, unknown> = { peerId: self, sent: [] as string[] }
const sent = report.sent as string[]

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

let round = 0
setInterval(() => {
  round++
  void dialBootstrap()
  registry.set(`node/${self}`, { role: 'gateway', labels: {}, addresses: mesh.getMultiaddrs().map(String), sensors: [], backend: null, version: 'rogue', cert: id.certificate, startedAt: Date.now() }).catch(() => {})
  registry.set(`instance/${self}/rogue`, { round }).catch(() => {})
  if (values.forge != null) {
    // a write to a key it does not own, with no fleet authorisation
    signEntry(id.privateKey, { k: values.forge, v: JSON.stringify({ forged: round }), t: [Date.now(), 0], w: self })
      .then(async e => await mesh.services.pubsub.publish(REGISTRY_TOPIC, deltaCodec.encode({ entries: [e] })))
      .catch(() => {})
  }
  for (const peer of trust.verifiedPeers()) registry.syncWith(peer).catch(() => {})
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
