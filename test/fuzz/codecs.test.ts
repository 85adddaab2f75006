import { lpStream, streamPair } from '@libp2p/utils'
import fc from 'fast-check'
import t, { type Test } from 'tap'
import { Uint8ArrayList } from 'uint8arraylist'
import { serveTransfer } from '../../protocols/bundle-transfer/server.ts'
import { TransferClient } from '../../protocols/bundle-transfer/client.ts'
import { chunkHeader, transferCodec } from '../../protocols/bundle-transfer/wire.ts'
import { answerCertificate, certCodec, offerCertificate } from '../../protocols/cert-exchange/index.ts'
import { InvalidMessageError, ProtocolMessageError } from '../../protocols/errors.ts'
import { answerLogs, askLogs, logQueryCodec } from '../../protocols/log-query/index.ts'
import { answerPredict, encodePredictBody, forwardPredict, predictReplyHeaderCodec, predictRequestHeaderCodec } from '../../protocols/predict/index.ts'
import { answerRenewal, renewRequestCodec, renewResponseCodec, requestRenewal } from '../../protocols/cert-renewal/index.ts'
import { answerRelay, relayRequestCodec, relayResponseCodec, requestRelay } from '../../protocols/registry-relay/index.ts'
import { answerPushPull, pushPull, SYNC_BUCKETS, swimSyncCodec } from '../../protocols/swim-sync/index.ts'
import { frameCodec } from '../../protocols/swim/wire.ts'
import { SwimLink } from '../../protocols/swim/link.ts'
import { deltaCodec, REGISTRY_TOPIC } from '../../protocols/registry/delta.ts'
import { answerSync, BUCKETS, syncCodec, syncWith } from '../../protocols/registry-sync/index.ts'
import { MESSAGE_OPTIONS, messageType } from '../../protocols/tf-serving/definitions.ts'
import { decodeTensor, TensorProtoError } from '../../protocols/tf-serving/tensor-proto.ts'
import { MemoryMesh } from '../helpers/memory-mesh.ts'
import { banner, concat, CrashWatch, damagedBytes, describe, HEAP_GROWTH_LIMIT, hostileText, isBugError, params, RUNS, settledHeap } from './lib.ts'
import type { JsonCodec } from '../../protocols/codec.ts'
import type { Stream } from '@libp2p/interface'

/**
 * Every protocol codec, fuzzed: first the decoder on its own, then the real
 * protocol functions on both ends of real libp2p stream pairs, one end
 * played by a hostile peer that sends a valid message mutated (wrong types,
 * huge values, deep nesting, unknown or missing fields, bit flips,
 * truncation, frames whose length prefix lies). Each exchange must end with
 * a refusal of the protocol's own error classes (or a stream error), never
 * a TypeError/RangeError, never an uncaught error, within its timeout.
 */
t.comment(banner('codecs'))
const watch = new CrashWatch()
const heapAtStart = await settledHeap()

const mesh = new MemoryMesh()
const member = await mesh.add()
const peer = await mesh.add()
await mesh.introduce()
await member.registry.start()
t.teardown(async () => { await member.registry.stop() })

const digest = 'ab'.repeat(32)
const PREDICT_BODY = encodePredictBody({ instances: [[0.1, 0.2, 0.3]] }, 1 << 20)
const SIG = 'A'.repeat(86)
const MEMBER = { id: '12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', inc: 3, addrs: ['/ip4/127.0.0.1/tcp/4001'], sig: SIG }
const entry = await (async () => {
  await peer.registry.start()
  await peer.registry.set(`node/${peer.peerId.toString()}`, { role: 'gateway', zone: 'a' })
  const e = [...peer.registry.wireEntries()][0]
  await peer.registry.stop()
  return e ?? { k: `node/${peer.peerId.toString()}`, v: '{"a":1}', t: [1700000000000, 0], w: peer.peerId.toString(), s: 'c2lnbmF0dXJlLWJ5dGVz' }
})()

/** Valid messages of every codec: what the mutators start from. */
const VALID = {
  delta: [{ entries: [entry] }],
  sync: [
    { type: 'digest', buckets: Array(BUCKETS).fill('0123456789abcdef') },
    { type: 'diff', buckets: [0, 5, 63] },
    { type: 'entries', entries: [entry] },
    { type: 'end' }
  ],
  cert: [{ cert: 'eyJhbGciOiJFZERTQSJ9.e30.c2lnbmF0dXJl' }],
  predictRequest: [
    { model: 'anomaly', bytes: PREDICT_BODY.length, maxReplyBytes: 1 << 20 },
    { model: 'anomaly', bytes: PREDICT_BODY.length, maxReplyBytes: 1 << 20, requestId: '4f1c2d9e-aaaa-4bbb-8ccc-0123456789ab' },
    { model: 'anomaly', version: '1.0.0', bytes: PREDICT_BODY.length, maxReplyBytes: 1 << 20, answer: 'tensors' },
    { model: 'anomaly', bytes: 0, maxReplyBytes: 4096, answer: 'metadata' }
  ],
  predictResponse: [{ status: 200, bytes: PREDICT_BODY.length }, { status: 503, bytes: 4 }],
  renewRequest: [{ cert: 'eyJhbGciOiJFZERTQSJ9.e30.c2lnbmF0dXJl' }],
  renewResponse: [{ cert: 'eyJhbGciOiJFZERTQSJ9.e30.c2lnbmF0dXJl' }, { error: 'not yet', code: 'ERR_TOO_EARLY' }],
  relayRequest: [{ entries: [entry] }],
  relayResponse: [{ ok: true }, { error: 'not the scheduler', code: 'ERR_NOT_RELAYED' }],
  swimSync: [
    { t: 'digest', buckets: Array(SYNC_BUCKETS).fill('0123456789abcdef') },
    { t: 'diff', buckets: [1, 2], records: [MEMBER] },
    { t: 'records', records: [MEMBER, { ...MEMBER, acc: { k: 's', from: MEMBER.id, sig: SIG } }] }
  ],
  swim: [
    { t: 'ping', seq: 1, g: [MEMBER], inc: 3, for: { id: MEMBER.id, n: 9 } },
    { t: 'ack', re: 1, now: 1700000000000, g: [MEMBER], sig: SIG },
    { t: 'req', seq: 2, id: MEMBER.id, n: 5, ms: 500 },
    { t: 'nack', re: 2 },
    { t: 'gossip', g: [MEMBER] }
  ],
  logQuery: [
    { type: 'query', query: { order: 'desc', level: 'warn', services: ['api'], text: 'boom', since: 0, until: 1e12 }, limit: 100, pageSize: 10 },
    { type: 'next' },
    { type: 'page', entries: ['{"level":"info","msg":"a"}'], done: false },
    { type: 'error', code: 'ERR_FORBIDDEN', message: 'no' }
  ],
  transfer: [
    { type: 'head', digest },
    { type: 'have', digest },
    { type: 'get', digest, index: 3 },
    { type: 'head-reply', size: 100, tailOffset: 40, midstate: digest, tail: 'AAAA' },
    { type: 'have-reply', complete: false, bitmap: 'Dw==' },
    { type: 'error', code: 'NOT_HELD', message: 'no' }
  ]
} as const

const CODECS: Array<[string, JsonCodec<any>, readonly unknown[]]> = [
  ['registry-delta', deltaCodec, VALID.delta],
  ['registry-sync', syncCodec, VALID.sync],
  ['cert-exchange', certCodec, VALID.cert],
  ['predict-request', predictRequestHeaderCodec, VALID.predictRequest],
  ['predict-reply', predictReplyHeaderCodec, VALID.predictResponse],
  ['cert-renew-request', renewRequestCodec, VALID.renewRequest],
  ['cert-renew-response', renewResponseCodec, VALID.renewResponse],
  ['registry-relay-request', relayRequestCodec, VALID.relayRequest],
  ['registry-relay-response', relayResponseCodec, VALID.relayResponse],
  ['swim-sync', swimSyncCodec, VALID.swimSync],
  ['swim', frameCodec, VALID.swim],
  ['log-query', logQueryCodec, VALID.logQuery],
  ['bundle-transfer', transferCodec, VALID.transfer]
]

/** A refusal must be typed; a schema refusal must name the field, rooted at the codec's name. */
function checkRefusal (codec: string, err: unknown): string | undefined {
  if (isBugError(err)) return `untyped failure: ${describe(err)}`
  if (err instanceof InvalidMessageError) {
    if (err.field === '') return `schema refusal without a field (${codec})`
    if (!err.message.includes(err.field)) return `message "${err.message}" does not name ${err.field}`
  }
  if (err instanceof ProtocolMessageError && (typeof err.code !== 'string' || !err.code.startsWith('ERR_'))) return `protocol error without a code: ${describe(err)}`
  return undefined
}

/** A frame as a hostile peer writes it: the payload, maybe behind a length prefix that lies. */
const frame = (version: number, valid: readonly unknown[]): fc.Arbitrary<{ kind: string, bytes: Uint8Array, lie?: number }> =>
  fc.oneof(
    { weight: 6, arbitrary: hostileText(valid).map(h => ({ kind: h.kind, bytes: concat(new Uint8Array([version]), h.bytes) })) },
    { weight: 1, arbitrary: fc.tuple(hostileText(valid), fc.constantFrom(2 ** 31 - 1, 2 ** 40, 64 * 1024 * 1024, 5 * 1024 * 1024)).map(([h, lie]) => ({ kind: `length prefix says ${lie}`, bytes: concat(new Uint8Array([version]), h.bytes).slice(0, 64), lie })) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 256 }).map(bytes => ({ kind: 'random bytes', bytes })) },
    { weight: 1, arbitrary: fc.constantFrom(new Uint8Array(0), new Uint8Array([version])).map(bytes => ({ kind: `frame of ${bytes.length} bytes`, bytes })) }
  )

function varint (n: number): Uint8Array {
  const out: number[] = []
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80)
    n = Math.floor(n / 0x80)
  }
  out.push(n)
  return new Uint8Array(out)
}

async function sendFrame (stream: Stream, f: { bytes: Uint8Array, lie?: number, then?: Uint8Array[] }): Promise<void> {
  if (f.lie != null) {
    stream.send(concat(varint(f.lie), f.bytes))
  } else {
    const lp = lpStream(stream, { maxDataLength: 64 * 1024 * 1024 })
    await lp.write(f.bytes)
    for (const more of f.then ?? []) await lp.write(more)
  }
  // the hostile peer is done talking; the victim sees end of stream after the frame
  await stream.close({ signal: AbortSignal.timeout(5_000) }).catch(() => {})
}

/** Outcome of one exchange: undefined when it completed, else the error it ended with. */
async function outcome (p: Promise<unknown>, ms = 20_000): Promise<{ err?: unknown, hung?: boolean }> {
  let timer: NodeJS.Timeout | undefined
  const hung = new Promise<{ hung: true }>(resolve => { timer = setTimeout(() => resolve({ hung: true }), ms) })
  try {
    return await Promise.race([p.then(() => ({}), err => ({ err })), hung])
  } finally {
    clearTimeout(timer)
  }
}

const failures = (t: Test, label: string, problems: string[]): void => {
  t.same(problems, [], `${label}: ${RUNS} hostile inputs, every one refused with a typed error`)
}

t.test('each decoder alone: hostile bytes are refused with its error classes, naming the field', async t => {
  for (const [name, codec, valid] of CODECS) {
    const problems: string[] = []
    await fc.assert(fc.asyncProperty(frame(codec.version, valid), async f => {
      try {
        codec.decode(f.lie == null ? f.bytes : concat(varint(f.lie), f.bytes))
      } catch (err) {
        const problem = checkRefusal(name, err)
        if (problem != null) problems.push(`${f.kind}: ${problem}`)
      }
    }), params(`decode ${name}`, RUNS * 2))
    failures(t, name, problems)
  }
})

t.test('registry gossip: a hostile delta is rejected by the real validator, never thrown', async t => {
  const problems: string[] = []
  await fc.assert(fc.asyncProperty(frame(deltaCodec.version, VALID.delta), async f => {
    try {
      const verdict = await member.deliver({ type: 'unsigned', topic: REGISTRY_TOPIC, data: f.bytes }, peer.peerId)
      if (!['accept', 'reject', 'ignore'].includes(verdict)) problems.push(`${f.kind}: verdict ${verdict}`)
    } catch (err) {
      problems.push(`${f.kind}: validator threw ${describe(err)}`)
    }
  }), params('gossip delta'))
  failures(t, 'registry-delta gossip', problems)
})

/**
 * One protocol side against a hostile peer. `victim` runs the real
 * protocol function on its stream; the hostile peer reads what the victim
 * says first (when `reads` frames are expected) then sends one mutated frame.
 */
async function againstHostile (t: Test, label: string, codecName: string, f: fc.Arbitrary<{ kind: string, bytes: Uint8Array, lie?: number, then?: Uint8Array[] }>, victim: (s: Stream) => Promise<unknown>, reads: number): Promise<void> {
  const problems: string[] = []
  await fc.assert(fc.asyncProperty(f, async fr => {
    const [mine, theirs] = await streamPair()
    const done = outcome(victim(mine))
    try {
      const lp = lpStream(theirs, { maxDataLength: 64 * 1024 * 1024 })
      for (let i = 0; i < reads; i++) await lp.read({ signal: AbortSignal.timeout(10_000) })
      await sendFrame(theirs, fr)
    } catch {
      // the victim may already have given up on us; what matters is how
    }
    const result = await done
    theirs.abort(new Error('fuzz case over'))
    if (result.hung === true) problems.push(`${fr.kind}: still running after 20 s`)
    else if (result.err != null) {
      const problem = checkRefusal(codecName, result.err)
      if (problem != null) problems.push(`${fr.kind}: ${problem}`)
    }
  }), params(label))
  failures(t, label, problems)
}

const quick = { timeoutMs: 5_000 }

t.test('cert-exchange over a stream pair', async t => {
  await againstHostile(t, 'answerCertificate vs hostile dialer', 'cert-exchange', frame(1, VALID.cert),
    async s => await answerCertificate(s, 'x'.repeat(32), async () => {}, quick), 0)
  await againstHostile(t, 'offerCertificate vs hostile listener', 'cert-exchange', frame(1, VALID.cert),
    async s => await offerCertificate(s, 'x'.repeat(32), quick), 1)
})

t.test('registry-sync over a stream pair, merging into a real registry', async t => {
  const replica = { entries: () => [], merge: async (es: any[]) => { await member.registry.merge(es) } }
  await againstHostile(t, 'answerSync vs hostile initiator', 'registry-sync', frame(1, VALID.sync),
    async s => await answerSync(s, replica, quick), 0)
  await againstHostile(t, 'syncWith vs hostile responder', 'registry-sync', frame(1, VALID.sync),
    async s => await syncWith(s, replica, quick), 1)
})

/** A predict header, then body frames: the body valid, damaged, or not JSON at all, in one frame or split. */
function predictFrames (valid: readonly unknown[]): fc.Arbitrary<{ kind: string, bytes: Uint8Array, lie?: number, then?: Uint8Array[] }> {
  const bodies = fc.oneof(
    fc.constant({ kind: 'body valid', bytes: PREDICT_BODY }),
    damagedBytes(PREDICT_BODY).map(d => ({ kind: `body ${d.kind}`, bytes: d.bytes })),
    hostileText([{ instances: [[1, 2]] }, { predictions: [[0.1]] }]).map(h => ({ kind: `body ${h.kind}`, bytes: h.bytes }))
  )
  return fc.tuple(frame(2, valid), bodies, fc.constantFrom(1, 2, 7)).map(([head, body, parts]) => {
    const size = Math.ceil(body.bytes.length / parts) || 1
    const then = Array.from({ length: parts }, (_, i) => body.bytes.subarray(i * size, (i + 1) * size)).filter(b => b.length > 0)
    return { ...head, kind: `${head.kind}; ${body.kind} in ${then.length} frames`, then }
  })
}

t.test('predict over a stream pair: header and chunked body', async t => {
  await againstHostile(t, 'answerPredict vs hostile caller', 'predict-request', predictFrames(VALID.predictRequest),
    async s => await answerPredict(s, async (_m, _v, body) => ({ status: 200, body: { echoed: typeof body } }), { timeoutMs: 5_000, maxBodyBytes: 1 << 20, refuse: err => ({ status: 400, body: { code: (err as any).code, message: err.message } }) }), 0)
  await againstHostile(t, 'forwardPredict vs hostile replica', 'predict-reply', predictFrames(VALID.predictResponse),
    async s => await forwardPredict(s, { model: 'anomaly', body: PREDICT_BODY }, { timeoutMs: 5_000, maxReplyBytes: 1 << 20 }), 2)
})

t.test('cert-renewal over a stream pair', async t => {
  await againstHostile(t, 'answerRenewal vs hostile node', 'cert-renew-request', frame(1, VALID.renewRequest),
    async s => { await answerRenewal(s, async () => 'y'.repeat(32), quick) }, 0)
  await againstHostile(t, 'requestRenewal vs hostile coordinator', 'cert-renew-response', frame(1, VALID.renewResponse),
    async s => await requestRenewal(s, 'x'.repeat(32), quick), 1)
})

t.test('registry-relay over a stream pair', async t => {
  await againstHostile(t, 'answerRelay vs hostile member', 'registry-relay-request', frame(1, VALID.relayRequest),
    async s => { await answerRelay(s, async () => {}, quick) }, 0)
  await againstHostile(t, 'requestRelay vs hostile scheduler', 'registry-relay-response', frame(1, VALID.relayResponse),
    async s => { await requestRelay(s, [entry], quick) }, 1)
})

t.test('swim-sync over a stream pair', async t => {
  await againstHostile(t, 'answerPushPull vs hostile initiator', 'swim-sync', frame(1, VALID.swimSync),
    async s => await answerPushPull(s, () => [MEMBER], quick), 0)
  await againstHostile(t, 'pushPull vs hostile responder', 'swim-sync', frame(1, VALID.swimSync),
    async s => await pushPull(s, [MEMBER], quick), 1)
})

t.test('swim link over a stream pair', async t => {
  // the link reads frames for as long as it lives: it must report a bad one through onInvalid (typed) and close
  await againstHostile(t, 'SwimLink vs hostile member', 'swim', frame(1, VALID.swim), async s => {
    let invalid: Error | undefined
    const link = new SwimLink(s, {
      onRequest: async () => ({ t: 'nack', re: 0 }),
      onGossip: () => {},
      onInvalid: err => { invalid = err }
    })
    try {
      await link.request({ t: 'ping' }, 300)
    } catch (err: any) {
      if (err?.name !== 'ProbeTimeoutError' && err?.name !== 'LinkClosedError') throw err
    }
    await new Promise(resolve => setTimeout(resolve, 50))
    link.close()
    if (invalid != null) throw invalid
  }, 1)
})

t.test('log-query over a stream pair', async t => {
  const source = async function * () { for (let i = 0; i < 50; i++) yield JSON.stringify({ level: 'info', msg: `line ${i}` }) }
  await againstHostile(t, 'answerLogs vs hostile asker', 'log-query', frame(1, VALID.logQuery),
    async s => await answerLogs(s, source, { idleTimeoutMs: 5_000 }), 0)
  await againstHostile(t, 'askLogs vs hostile answerer', 'log-query', frame(1, VALID.logQuery),
    async s => { for await (const page of askLogs(s, { query: { order: 'asc' }, limit: 100, pageSize: 10 }, { pageTimeoutMs: 5_000 })) void page }, 1)
})

t.test('bundle-transfer over a stream pair', async t => {
  const source = {
    head: async () => ({ size: 100, tailOffset: 40, midstate: new Uint8Array(32), tail: new Uint8Array(60) }),
    have: () => ({ complete: false as const, chunks: [true, false, true] }),
    chunk: async (_d: string, index: number) => index === 0 ? new Uint8Array(64) : undefined
  }
  await againstHostile(t, 'serveTransfer vs hostile requester', 'bundle-transfer', frame(1, VALID.transfer),
    async s => await serveTransfer(s, source, { idleTimeoutMs: 5_000, writeTimeoutMs: 5_000 }), 0)
  const chunkFrames = fc.tuple(fc.constantFrom(0, 1, 2 ** 32 - 1), fc.uint8Array({ maxLength: 128 })).chain(([index, data]) =>
    damagedBytes(new Uint8ArrayList(chunkHeader(index), data).subarray()).map(d => ({ kind: `chunk frame, ${d.kind}`, bytes: d.bytes })))
  const replies = fc.oneof(frame(1, VALID.transfer), chunkFrames)
  for (const ask of ['head', 'have', 'chunk'] as const) {
    await againstHostile(t, `TransferClient.${ask} vs hostile provider`, 'bundle-transfer', replies, async s => {
      const client = new TransferClient(s, { replyTimeoutMs: 5_000 })
      try {
        if (ask === 'head') await client.head(digest)
        else if (ask === 'have') await client.have(digest)
        else await client.chunk(digest, 0)
      } finally {
        await client.close()
      }
    }, 1)
  }
})

t.test('tf-serving TensorProto: damaged protobuf decodes to a tensor or a TensorProtoError naming the field', async t => {
  const TensorProto = messageType('tensorflow.TensorProto')
  const valid = [
    { dtype: 'DT_FLOAT', tensor_shape: { dim: [{ size: 2 }, { size: 3 }] }, float_val: [1, 2, 3, 4, 5, 6] },
    { dtype: 'DT_INT64', tensor_shape: { dim: [{ size: 2 }] }, int64_val: ['1', '-9'] },
    { dtype: 'DT_STRING', tensor_shape: { dim: [{ size: 1 }] }, string_val: [Buffer.from('hi')] },
    { dtype: 'DT_DOUBLE', tensor_shape: { dim: [{ size: 2 }] }, tensor_content: Buffer.alloc(16) },
    { dtype: 'DT_BOOL', tensor_shape: { dim: [{ size: 4 }] }, bool_val: [true] }
  ].map(v => TensorProto.encode(TensorProto.fromObject(v)).finish())
  const problems: string[] = []
  await fc.assert(fc.property(fc.constantFrom(...valid).chain(b => damagedBytes(b)), d => {
    let obj
    try {
      obj = TensorProto.toObject(TensorProto.decode(d.bytes), MESSAGE_OPTIONS)
    } catch {
      return // not protobuf at all: grpc-js refuses it before our code runs
    }
    try {
      decodeTensor(obj, 'inputs.x')
    } catch (err) {
      if (!(err instanceof TensorProtoError)) problems.push(`${d.kind}: ${describe(err)}`)
      else if (!err.message.includes(err.field) || !err.field.startsWith('inputs.x')) problems.push(`${d.kind}: field ${err.field} not named`)
    }
  }), params('tensor-proto', RUNS * 4))
  failures(t, 'TensorProto', problems)
})

t.test('the process survived and memory stayed bounded', async t => {
  watch.stop()
  t.same(watch.crashes, [], 'no uncaught exception or unhandled rejection')
  const growth = await settledHeap() - heapAtStart
  t.comment(`heap growth: ${(growth / 1024 / 1024).toFixed(1)} MiB`)
  t.ok(growth < HEAP_GROWTH_LIMIT, `heap grew ${(growth / 1024 / 1024).toFixed(1)} MiB (limit ${HEAP_GROWTH_LIMIT / 1024 / 1024} MiB)`)
})
