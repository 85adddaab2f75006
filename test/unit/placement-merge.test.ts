import t from 'tap'
import fc from 'fast-check'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { pino } from 'pino'
import { issueNodeCertificate } from '../../node/identity/certificate.ts'
import { signEntry, type WireEntry } from '../../node/registry/entry.ts'
import { Election } from '../../node/scheduler/election.ts'
import { winningPlacement } from '../../node/scheduler/placements.ts'
import { FakeMembership } from '../helpers/fake-membership.ts'
import { MemoryMesh } from '../helpers/memory-mesh.ts'
import type { PrivateKey } from '@libp2p/interface'

// Registries that receive the same entries in any order, batching and
// repetition must end with the same placement per deployment — and never a
// placement from a writer that did not lead with its term.

const mesh = new MemoryMesh()
const writers = new Map<string, { key: PrivateKey, id: string, cert: string }>()
for (const name of ['a', 'b', 'rogue', 'e1', 'e2', 'e3']) {
  const key = await generateKeyPair('Ed25519')
  const id = peerIdFromPrivateKey(key).toString()
  writers.set(name, { key, id, cert: await issueNodeCertificate(mesh.fleet.privateKey, { peerId: id, role: 'gateway', fleetId: 'test' }) })
}
const w = (name: string): { key: PrivateKey, id: string, cert: string } => writers.get(name)!
const A = w('a').id
const B = w('b').id
const R = w('rogue').id

let clock = 0
async function entry (name: string, key: string, value: unknown): Promise<WireEntry> {
  clock += 1
  return await signEntry(w(name).key, { k: key.replace('$', w(name).id), v: JSON.stringify(value), t: [clock, 0], w: w(name).id })
}
const claim = (term: number): Record<string, unknown> => ({ term, leaseMs: 60_000, since: 0 })
const placement = (term: number, nodes: string[]): Record<string, unknown> => ({ term, nodes, replicas: nodes.length, bundle: 'b'.repeat(64), deploymentTs: [1, 0], at: 0 })

/**
 * The entries, signed afresh for each run: anti-entropy treats a claim as a
 * renewal only while it is recent by its writer's clock.
 */
async function build (): Promise<{ required: WireEntry[], optional: WireEntry[] }> {
  clock = Date.now() - 1000
  // older than the steady state below, so they lose to it key by key: what b wrote while it led, and before
  const stale: WireEntry[] = [
    await entry('b', 'scheduler/default/$', claim(2)),
    await entry('b', 'placement/d1/$', placement(2, [B])),
    await entry('b', 'placement/d2/$', placement(2, [B, A])),
    await entry('e3', 'scheduler/default/$', { follows: B, term: 2 }),
    await entry('a', 'placement/d2/$', placement(2, [A]))
  ]

  // the steady state after a hand-over from b to a, endorsed by the others
  const required: WireEntry[] = []
  for (const name of writers.keys()) {
    required.push(await entry(name, 'node/$', { role: 'gateway', labels: {}, addresses: [], sensors: [], backend: null, version: 'test', cert: w(name).cert, startedAt: 0 }))
  }
  required.push(await entry('a', 'scheduler/default/$', claim(3)))
  for (const e of ['e1', 'e2', 'e3']) required.push(await entry(e, 'scheduler/default/$', { follows: A, term: 3 }))
  for (const d of ['d1', 'd2', 'd3']) required.push(await entry('a', `placement/${d}/$`, placement(3, [w('e1').id])))

  // what else may be around, in any combination: the stale entries, and forged or newer ones
  const optional: WireEntry[] = [
    ...stale,
    await entry('b', 'scheduler/default/$', { follows: A, term: 3 }),
    await entry('rogue', 'scheduler/default/$', claim(2 ** 53 - 1)),
    await entry('rogue', 'scheduler/default/$', claim(4)),
    await entry('rogue', 'placement/d1/$', placement(1000, [R])),
    await entry('rogue', 'placement/d2/$', placement(4, [R])),
    await entry('rogue', 'placement/d3/$', placement(2 ** 53 - 1, [R])),
    await entry('rogue', 'scheduler/default/$', { follows: R, term: 4 }),
    await entry('a', 'placement/d2/$', placement(3, [w('e2').id]))
  ]
  return { required, optional }
}
const OPTIONAL = (await build()).optional.length

const roster = [...writers.values()].map(x => ({ id: x.id, role: 'gateway' as const }))
const quiet = pino({ level: 'silent' })

/** One observer: a registry and an election that follows (never claims); `batches` are merged in order. */
async function observe (batches: WireEntry[][]): Promise<Array<string | undefined>> {
  const m = await mesh.add()
  await m.registry.start()
  const view = new FakeMembership(m.peerId.toString(), () => roster)
  const now = { ms: 1_000_000 }
  const election = new Election({ peerId: m.peerId, registry: m.registry, membership: view, logger: quiet, monotonic: () => now.ms }, { eligible: false, settleMs: 0 })
  await election.start()
  try {
    for (const batch of batches) {
      await m.registry.merge(batch)
      election.tick()
    }
    for (let i = 0; i < 3; i++) {
      now.ms += 100
      election.tick()
      await new Promise(resolve => setImmediate(resolve))
    }
    return ['d1', 'd2', 'd3'].map(d => {
      const p = winningPlacement(m.registry, d, election)
      return p == null ? undefined : `${p.scheduler}@${p.term}:${p.nodes.join(',')}`
    })
  } finally {
    await election.stop()
    await m.registry.stop()
    mesh.members.splice(mesh.members.indexOf(m), 1)
  }
}

t.test('one winner per deployment on every node, whatever order entries arrive in', async t => {
  const scenario = fc.record({
    extra: fc.subarray([...Array(OPTIONAL).keys()]),
    orders: fc.array(fc.tuple(fc.array(fc.nat(), { minLength: 40, maxLength: 40 }), fc.integer({ min: 1, max: 6 }), fc.boolean()), { minLength: 2, maxLength: 3 })
  })
  let runs = 0
  await fc.assert(fc.asyncProperty(scenario, async ({ extra, orders }) => {
    const { required, optional } = await build()
    const all = [...required, ...extra.map(i => optional[i]!)]
    const results: Array<Array<string | undefined>> = []
    for (const [keys, batches, repeat] of orders) {
      // a permutation of the entries, cut into batches, some delivered twice
      const shuffled = all.map((e, i) => ({ e, k: keys[i] ?? 0 })).sort((x, y) => x.k - y.k).map(x => x.e)
      const size = Math.ceil(shuffled.length / batches)
      const cut: WireEntry[][] = []
      for (let i = 0; i < shuffled.length; i += size) cut.push(shuffled.slice(i, i + size))
      if (repeat) cut.push(shuffled.slice(0, size))
      // entries of a writer whose certificate had not arrived yet were refused: anti-entropy hands them over again later
      cut.push(shuffled)
      results.push(await observe(cut))
    }
    runs++
    const first = results[0]!
    if (!results.every(r => r.join('|') === first.join('|'))) return false
    // a's placements with its term win everywhere; nothing of the rogue's ever does
    return first.every(p => p != null && p.startsWith(`${A}@3:`) && !p.includes(R))
  }), { numRuns: 40 })
  t.equal(runs, 40, 'every generated delivery was checked')
})
