import { generateKeyPairSync } from 'node:crypto'
import t from 'tap'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { generateKey } from '@libp2p/pnet'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { serviceCapabilities, serviceDependencies, type Startable } from '@libp2p/interface'
import { pino } from 'pino'
import { issueNodeCertificate } from '../../node/identity/certificate.ts'
import { ServiceLifecycle, type Ordered } from '../../node/mesh/lifecycle.ts'
import { createMesh } from '../../node/mesh/libp2p.ts'
import { registry, type RegistryService } from '../../node/registry/service.ts'
import { MemoryRegistryStore } from '../../node/registry/store.ts'
import { peerTrust, trustGater, type TrustService } from '../../node/trust/service.ts'
import { CERT_PROTOCOL } from '../../protocols/cert-exchange/index.ts'
import { SYNC_PROTOCOL } from '../../protocols/registry-sync/index.ts'
import type { Mesh } from '../../node/mesh/libp2p.ts'

// The agent's services run inside a real libp2p node (no listening address:
// nothing here touches the network), which starts every component's phase at
// once; these tests check that gatemesh's services still start in order,
// stop in reverse, and that a failed start leaves nothing running.

const silent = pino({ level: 'silent' })
const delay = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

/** A service that logs each step; `slow` makes it finish late, so ordering by luck would show. */
class Probe implements Startable, Ordered {
  readonly lifecycle: ServiceLifecycle
  readonly [serviceCapabilities]: string[]
  readonly [serviceDependencies]: string[]
  readonly #name: string
  readonly #log: string[]
  readonly #slowMs: number
  readonly #fail?: string

  constructor (name: string, deps: () => Ordered[], depNames: string[], log: string[], slowMs: number, fail?: string) {
    this.#name = name
    this.#log = log
    this.#slowMs = slowMs
    if (fail != null) this.#fail = fail
    this.lifecycle = new ServiceLifecycle(name, deps)
    this[serviceCapabilities] = [`test/${name}`]
    this[serviceDependencies] = depNames.map(d => `test/${d}`)
  }

  async #step (phase: string): Promise<void> {
    await delay(this.#slowMs)
    if (this.#fail === phase) throw new Error(`${this.#name} failed in ${phase}`)
    this.#log.push(`${this.#name} ${phase}`)
  }

  async beforeStart (): Promise<void> { await this.lifecycle.run('beforeStart', async () => { await this.#step('beforeStart') }) }
  async start (): Promise<void> { await this.lifecycle.run('start', async () => { await this.#step('start') }) }
  async afterStart (): Promise<void> { await this.lifecycle.run('afterStart', async () => { await this.#step('afterStart') }) }
  async beforeStop (): Promise<void> { await this.lifecycle.stop(async () => { await delay(this.#slowMs); this.#log.push(`${this.#name} stop`) }) }
  async stop (): Promise<void> {}
}

type Probes = { a: Probe, b: Probe, c: Probe }

async function probeMesh (log: string[], fail?: { name: keyof Probes, phase: string }): Promise<Mesh<Probes>> {
  const privateKey = await generateKeyPair('Ed25519')
  const psk = new Uint8Array(95)
  generateKey(psk)
  const make = (name: keyof Probes, deps: Array<keyof Probes>, slowMs: number) => (components: any) =>
    new Probe(name, () => deps.map(d => components[d]), deps, log, slowMs, fail?.name === name ? fail.phase : undefined)
  return await createMesh<Probes>({
    privateKey,
    networkKey: psk,
    listen: [],
    gater: {},
    version: 'test',
    // c is declared first and a is the slowest: only the lifecycle puts them in order
    services: { c: make('c', ['b'], 1), b: make('b', ['a'], 5), a: make('a', [], 40) }
  })
}

t.test('services start phase by phase in dependency order and stop in reverse', async t => {
  const log: string[] = []
  const mesh = await probeMesh(log)
  await mesh.start()
  t.same(log, [
    'a beforeStart', 'b beforeStart', 'c beforeStart',
    'a start', 'b start', 'c start',
    'a afterStart', 'b afterStart', 'c afterStart'
  ])
  log.length = 0
  await mesh.stop()
  t.same(log, ['c stop', 'b stop', 'a stop'])
})

t.test('a failed start stops what started, and what depends on it never starts', async t => {
  const log: string[] = []
  const mesh = await probeMesh(log, { name: 'b', phase: 'start' })
  await t.rejects(async () => { await mesh.start() }, { message: 'b failed in start' })
  t.same(log, [
    'a beforeStart', 'b beforeStart', 'c beforeStart',
    'a start',
    // libp2p stopped every component; each undid what it had done, dependents first
    'c stop', 'b stop', 'a stop'
  ])
  t.equal(mesh.status, 'stopped')
})

async function agentServices (load: () => Promise<any[]>) {
  const fleet = generateKeyPairSync('ed25519')
  const privateKey = await generateKeyPair('Ed25519')
  const peerId = peerIdFromPrivateKey(privateKey)
  const certificate = await issueNodeCertificate(fleet.privateKey, { peerId: peerId.toString(), role: 'gateway', labels: {}, fleetId: 'test' })
  const psk = new Uint8Array(95)
  generateKey(psk)
  const store = new MemoryRegistryStore()
  store.load = load
  type S = { trust: TrustService, registry: RegistryService }
  let mesh: Mesh<S> | undefined
  mesh = await createMesh<S>({
    privateKey,
    networkKey: psk,
    listen: [],
    gater: trustGater(() => mesh?.services.trust),
    version: 'test',
    services: {
      trust: peerTrust({ fleetPublicKey: fleet.publicKey, certificate, logger: silent }),
      registry: registry({ store, logger: silent })
    }
  })
  return mesh
}

t.test('the registry loads after trust handles the certificate exchange, and subscribes after pubsub started', async t => {
  let protocolsAtLoad: string[] = []
  const mesh: Mesh<{ trust: TrustService, registry: RegistryService }> = await agentServices(async () => {
    protocolsAtLoad = mesh.getProtocols()
    return []
  })
  await mesh.start()
  t.ok(protocolsAtLoad.includes(CERT_PROTOCOL), 'trust answered the certificate exchange before the registry loaded')
  t.ok(mesh.getProtocols().includes(SYNC_PROTOCOL), 'the registry serves anti-entropy')
  t.ok(mesh.services.pubsub.getTopics().length > 0, 'the registry subscribed to its topic')
  await mesh.stop()
  t.notOk(mesh.getProtocols().includes(SYNC_PROTOCOL))
  t.notOk(mesh.getProtocols().includes(CERT_PROTOCOL))
})

t.test('a registry that cannot load fails the start: trust is stopped and no handle is left behind', async t => {
  const count = (): Record<string, number> => {
    const out: Record<string, number> = {}
    for (const r of process.getActiveResourcesInfo()) out[r] = (out[r] ?? 0) + 1
    return out
  }
  const before = count()
  const mesh = await agentServices(async () => { throw new Error('disk on fire') })
  await t.rejects(async () => { await mesh.start() }, { message: 'disk on fire' })
  t.equal(mesh.status, 'stopped')
  t.notOk(mesh.getProtocols().includes(CERT_PROTOCOL), 'trust unregistered the certificate exchange')
  t.notOk(mesh.getProtocols().includes(SYNC_PROTOCOL), 'the registry never served anti-entropy')
  // timers of the libp2p node or of a service that outlived the rollback would show here
  await delay(50)
  const after = count()
  const left = Object.keys(after).filter(k => after[k]! > (before[k] ?? 0)).map(k => `${k} +${after[k]! - (before[k] ?? 0)}`)
  t.same(left, [], 'no handle outlives the failed start')
})
