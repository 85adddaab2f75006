import t from 'tap'
import pino from 'pino'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { Connector } from '../../node/membership/connector.ts'
import type { Member } from '../../node/membership/types.ts'
import type { Connection } from '@libp2p/interface'

// The connector keeps a connection to the zone's scheduler, which members hand their health.

const member = (peerId: string, port: number, state: Member['state'] = 'alive'): Member =>
  ({ peerId, self: false, labels: {}, addresses: [`/ip4/127.0.0.1/tcp/${port}/p2p/${peerId}`], state, lastSeenMs: 0, since: 0 })

t.test('dials its zone\'s scheduler when not connected to it, and only then', async t => {
  const self = peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
  const ids = await Promise.all(Array.from({ length: 12 }, async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()))
  const members = ids.map((id, i) => member(id, 4000 + i))
  const scheduler = ids[11]!
  let leader: string | undefined = scheduler
  const connected = new Set(ids.slice(0, 6))
  const dialled: string[] = []
  const connector = new Connector({
    peerId: self,
    network: {
      dial: async addrs => {
        const a = (Array.isArray(addrs) ? addrs : [addrs])[0]!.toString()
        dialled.push(a.slice(a.lastIndexOf('/') + 1))
        return {} as Connection
      },
      getConnections: () => [...connected].map(id => ({ remotePeer: { toString: () => id }, streams: [] }) as unknown as Connection)
    },
    members: () => members,
    scheduler: () => leader,
    logger: pino({ level: 'silent' })
  }, { targetPeers: 6, zonePeers: 3 })
  connector.tick()
  t.same(dialled, [scheduler], 'six connected already (the target): only the scheduler is dialled')
  await new Promise(resolve => setImmediate(resolve))
  dialled.length = 0
  connected.add(scheduler)
  connector.tick()
  t.same(dialled, [], 'connected to it: nothing to do')
  connected.delete(scheduler)
  leader = self.toString()
  connector.tick()
  t.same(dialled, [], 'this node is the scheduler: nothing to do')
  leader = undefined
  connector.tick()
  t.same(dialled, [], 'no scheduler: nothing to do')
  leader = scheduler
  connector.tick()
  t.same(dialled, [scheduler], 'and again when the connection is gone')
})

t.test('closes the connections it dialled for an errand, once old and idle; keeps the rest, and its target', async t => {
  const self = peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
  const ids = await Promise.all(Array.from({ length: 8 }, async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()))
  const [kept, neighbour, errand, busy, young, inbound, scheduler, errand2] = ids as [string, string, string, string, string, string, string, string]
  const old = Date.now() - 60_000
  const closed: string[] = []
  const conns: Connection[] = []
  const conn = (id: string, o: { direction?: 'inbound' | 'outbound', open?: number, protocols?: string[] } = {}): Connection => ({
    remotePeer: { toString: () => id },
    direction: o.direction ?? 'outbound',
    status: 'open',
    timeline: { open: o.open ?? old },
    streams: (o.protocols ?? ['/meshsub/1.2.0', '/gatemesh/swim/1.0.0']).map(protocol => ({ protocol })),
    close: async () => { closed.push(id) },
    abort: () => {}
  }) as unknown as Connection
  const connector = new Connector({
    peerId: self,
    network: {
      dial: async () => {
        conns.push(conn(kept))
        return {} as Connection
      },
      getConnections: (peer?: unknown) => peer == null ? [...conns] : conns.filter(c => c.remotePeer.toString() === String(peer))
    },
    members: () => [member(kept, 5000)],
    scheduler: () => scheduler,
    neighbours: () => new Set([neighbour]),
    logger: pino({ level: 'silent' })
  }, { targetPeers: 7, zonePeers: 1 })
  connector.tick()
  await new Promise(resolve => setImmediate(resolve))
  t.equal(conns.length, 1, 'below its target, the connector dialled a member: one it keeps')
  conns.push(conn(neighbour), conn(errand), conn(busy, { protocols: ['/meshsub/1.2.0', '/gatemesh/bundle/1.0.0'] }),
    conn(young, { open: Date.now() }), conn(inbound, { direction: 'inbound' }), conn(scheduler), conn(errand2))
  connector.tick()
  t.same(closed, [errand], 'eight connected, target seven: one errand goes (not the kept member, the ring neighbour, a busy connection, a young one, an inbound one, the scheduler)')
  conns.splice(conns.findIndex(c => c.remotePeer.toString() === errand), 1)
  connector.tick()
  t.same(closed, [errand], 'at the target: nothing more is closed')
  // the busy connection's transfer ends; a young errand arrives: above the target again
  conns.splice(conns.findIndex(c => c.remotePeer.toString() === busy), 1, conn(busy))
  conns.push(conn(errand, { open: Date.now() }))
  connector.tick()
  t.same(closed, [errand, errand2], 'busy a moment ago: kept for now; the other old errand goes')
  // a peer with two old errand connections: both go, and it counts once against the target
  conns.splice(conns.findIndex(c => c.remotePeer.toString() === errand2), 1)
  closed.length = 0
  conns.unshift(conn(errand2), conn(errand2))
  conns.push(conn(errand, { open: old }))
  conns.splice(conns.findIndex(c => c.remotePeer.toString() === errand && c.timeline.open !== old), 1)
  connector.tick()
  t.same(closed, [errand2, errand2], 'eight peers, target seven: one peer goes, with both its connections; the other errand stays')
})
