import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import pino from 'pino'
import t from 'tap'
import { PredictRouter } from '../../node/scheduler/router.ts'
import { FakeMembership } from '../helpers/fake-membership.ts'
import type { Leader } from '../../node/scheduler/leader.ts'
import type { RegistryEntry } from '../../node/registry/entry.ts'
import type { PeerId } from '@libp2p/interface'

// Zone a's node asks for a model that runs only in zone b. It keeps none of
// zone b's instance entries (they stay in zone b); the deployment and its
// placement are fleet-wide, and the placement names the nodes to try.
const quiet = pino({ level: 'silent' })
const BUNDLE = 'b'.repeat(64)
const id = async (): Promise<string> => peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
const [self, a2, b1, b2, schedulerB] = await Promise.all([id(), id(), id(), id(), id()])
const zones = new Map([[self, 'a'], [a2, 'a'], [b1, 'b'], [b2, 'b'], [schedulerB, 'b']])

function fixture (init: { instances?: Record<string, unknown>, placed?: string[] } = {}): { router: PredictRouter, dialled: string[], view: FakeMembership } {
  const entries = new Map<string, unknown>([
    ['deployment/in-b', { id: 'in-b', model: { name: 'm', digest: BUNDLE }, replicas: 2, placement: { labels: { zone: 'b' }, policy: 'least-loaded' }, instance: {} }],
    [`placement/in-b/${schedulerB}`, { term: 3, nodes: init.placed ?? [b1, b2], replicas: 2, bundle: BUNDLE, deploymentTs: [1, 0], at: 1 }],
    ...Object.entries(init.instances ?? {})
  ])
  const entry = (key: string, value: unknown): RegistryEntry => ({ key, value, deleted: false, ts: [1, 0], writer: key.split('/')[1] ?? '' })
  const registry = {
    list: <T>(prefix = ''): Array<RegistryEntry<T>> => [...entries].filter(([k]) => k.startsWith(prefix)).map(([k, v]) => entry(k, v) as RegistryEntry<T>),
    value: <T>(key: string): T | undefined => entries.get(key) as T | undefined,
    keepsZoneOf: (peer: string): boolean => zones.get(peer) === 'a'
  }
  const authority = { leaderOf: (zone: string): Leader | undefined => zone === 'b' ? { peerId: schedulerB, term: 3 } : undefined, followed: () => [] }
  const view = new FakeMembership(self, () => [...zones].map(([peer, zone]) => ({ id: peer, role: 'gateway' as const, labels: { zone } })))
  const dialled: string[] = []
  const router = new PredictRouter({
    peerId: { toString: () => self } as PeerId,
    registry,
    membership: view,
    placements: authority,
    runtime: { has: () => false, get: () => { throw new Error('none here') } } as any,
    network: {
      handle: async () => {},
      unhandle: async () => {},
      dialProtocol: async (peer: PeerId) => {
        dialled.push(peer.toString())
        throw new Error('connection refused (no network in this test)')
      }
    },
    logger: quiet
  })
  return { router, dialled, view }
}

t.test('a model placed only in another zone is tried on the nodes its placement names', async t => {
  const { router, dialled } = fixture()
  t.same(router.replicas('m').map(r => [r.peerId, r.unknown]).sort(), [[b1, true], [b2, true]].sort(), 'both placed nodes of zone b, state unknown')
  t.match(router.status('m'), { model_version_status: [{ state: 'AVAILABLE' }] }, 'the model is available in the mesh')
  const reply = await router.predict('m', undefined, { instances: [[1]] })
  t.same([...dialled].sort(), [b1, b2].sort(), 'each placed node tried once (retries and failover as for known replicas)')
  t.equal(reply.status, 503, 'and when none answers: no replica answered, not "not deployed anywhere"')
  t.match(reply.body, { code: 'ERR_NO_REPLICA' })
})

t.test('known replicas in the node\'s own zone come first, then the other zone\'s placed nodes', async t => {
  const { router, dialled } = fixture({ placed: [b1], instances: { [`instance/${a2}/m`]: { state: 'running' } } })
  t.same(router.replicas('m').map(r => r.peerId), [a2], 'the known replica in zone a is the first group')
  await router.predict('m', undefined, { instances: [[1]] })
  t.same(dialled, [a2, b1], 'zone a\'s replica first; when it fails, zone b\'s placed node')
})

t.test('alive before suspect, and dead placed nodes are not tried', async t => {
  const { router, dialled, view } = fixture()
  view.states.set(b1, 'suspect')
  view.states.set(b2, 'dead')
  t.same(router.replicas('m').map(r => r.peerId), [b1], 'the suspect one, when no alive node is placed')
  view.states.set(b1, 'alive')
  view.states.set(b2, 'suspect')
  await router.predict('m', undefined, { instances: [[1]] })
  t.same(dialled, [b1, b2], 'the alive one first, the suspect one after it')
})

t.test('a node placed in a zone this node keeps is a replica only by its instance entry', async t => {
  const { router } = fixture({ placed: [a2] })
  t.same(router.replicas('m'), [], 'a placement naming a node of zone a adds nothing without its running instance')
  const reply = await router.predict('m', undefined, { instances: [[1]] })
  t.equal(reply.status, 404, 'not deployed anywhere')
})
