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
      getConnections: () => [...connected].map(id => ({ remotePeer: { toString: () => id } }) as unknown as Connection)
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
