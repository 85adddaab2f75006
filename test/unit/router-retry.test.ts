import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { streamPair } from '@libp2p/utils'
import { pino } from 'pino'
import t from 'tap'
import { errorReply } from '../../node/api/errors.ts'
import { PredictRouter } from '../../node/scheduler/router.ts'
import { answerPredict, PREDICT_PROTOCOL, PREDICT_PROTOCOL_2_0 } from '../../protocols/predict/index.ts'
import type { Stream } from '@libp2p/interface'

const logger = pino({ level: 'silent' })
const peer = async (): Promise<ReturnType<typeof peerIdFromPrivateKey>> => peerIdFromPrivateKey(await generateKeyPair('Ed25519'))

/**
 * A router on a fake mesh of two replicas of `m`, each answering with the
 * real predict protocol over a stream pair: `slow` ones take their time
 * (longer than the router waits), the others answer at once. What every
 * replica was asked, with the request id it got, is recorded.
 */
async function mesh (slow: (peer: string) => boolean, offered: string[] = [PREDICT_PROTOCOL]): Promise<{ router: PredictRouter, asked: Array<{ peer: string, requestId: string | undefined }>, settled: () => Promise<unknown> }> {
  const self = await peer()
  const replicas = [(await peer()).toString(), (await peer()).toString()]
  const asked: Array<{ peer: string, requestId: string | undefined }> = []
  const answering: Array<Promise<unknown>> = []
  const router = new PredictRouter({
    peerId: self,
    registry: { list: ((prefix: string) => prefix === 'instance/' ? replicas.map(p => ({ key: `instance/${p}/m`, value: { state: 'running' } })) : []) as any, value: (() => undefined) as any },
    membership: { members: () => replicas.map(p => ({ peerId: p, state: 'alive' })) as any },
    runtime: { has: () => false, get: () => { throw new Error('none here') } } as any,
    network: {
      handle: async () => {},
      unhandle: async () => {},
      dialProtocol: async (to, protocols) => {
        const wanted = Array.isArray(protocols) ? protocols : [protocols]
        const protocol = wanted.find(p => offered.includes(p))
        if (protocol == null) throw new Error('protocol selection failed')
        const [outbound, inbound] = await streamPair()
        ;(outbound as { protocol: string }).protocol = protocol
        const name = to.toString()
        answering.push(answerPredict(inbound as Stream, async (_model, _version, _body, _answer, requestId) => {
          asked.push({ peer: name, requestId })
          // the slow replica runs the request all the same: only its answer comes too late
          if (slow(name)) await new Promise(resolve => setTimeout(resolve, 600))
          return { status: 200, body: { predictions: [[name]] } }
        }, { refuse: err => errorReply(err) }).catch(() => {}))
        return outbound as Stream
      }
    },
    logger
  }, { timeoutMs: 150, attempts: 3 })
  return { router, asked, settled: async () => await Promise.all(answering) }
}

t.test('a request retried on another replica carries the same request id to both', async t => {
  const { router, asked, settled } = await mesh(() => true)
  const reply = await router.predict('m', undefined, { instances: [[1]] }, undefined, 'req-1')
  await settled()
  t.equal(reply.status, 503, 'both replicas too slow: no answer')
  t.equal(asked.length, 2, 'both were asked (and both ran it)')
  t.same(asked.map(a => a.requestId), ['req-1', 'req-1'], 'with the one id the request entered with')
  t.not(asked[0]!.peer, asked[1]!.peer, 'on two replicas')
})

t.test('when one replica answers in time the other never hears of it; the id still goes along', async t => {
  const { router, asked, settled } = await mesh(() => false)
  const reply = await router.predict('m', undefined, { instances: [[1]] }, undefined, 'req-2')
  await settled()
  t.equal(reply.status, 200)
  t.same(asked.map(a => a.requestId), ['req-2'])
})

t.test('a replica of an earlier release (predict 2.0.0 only) is still asked, without the id its header schema refuses', async t => {
  const { router, asked, settled } = await mesh(() => false, [PREDICT_PROTOCOL_2_0])
  const reply = await router.predict('m', undefined, { instances: [[1]] }, undefined, 'req-3')
  await settled()
  t.equal(reply.status, 200, JSON.stringify(reply.body))
  t.same(asked.map(a => a.requestId), [undefined])
})
