import { lpStream, streamPair } from '@libp2p/utils'
import t from 'tap'
import { errorReply } from '../../node/api/errors.ts'
import { BodyTooLargeError, OverloadedError, type InvalidMessageError } from '../../protocols/errors.ts'
import { answerPredict, CHUNK_BYTES, encodePredictBody, forwardPredict, MAX_REQUEST_ID_LENGTH, PREDICT_PROTOCOL_2_0, predictRequestHeaderCodec, requestIdAt, type PredictReply } from '../../protocols/predict/index.ts'

const MIB = 1024 * 1024

/** A request body of about `bytes` bytes of JSON. */
const bodyOf = (bytes: number): { instances: string[] } => ({ instances: Array.from({ length: Math.ceil(bytes / (64 * 1024)) + 1 }, (_, i) => String(i % 10).repeat(64 * 1024 - 8)) })

/** Answer one request on `inbound` with `handle`, as the router does (errorReply for refusals). */
function answer (inbound: Parameters<typeof answerPredict>[0], handle: (model: string, version: string | undefined, body: unknown) => Promise<PredictReply>, options: Partial<Parameters<typeof answerPredict>[2]> = {}): Promise<void> {
  return answerPredict(inbound, handle, { refuse: err => errorReply(err), ...options })
}

t.test('a body many times the frame size streams through in frames, both ways', async t => {
  const [outbound, inbound] = await streamPair()
  const body = bodyOf(10 * MIB)
  const bytes = encodePredictBody(body, 16 * MIB)
  t.ok(bytes.byteLength > 10 * MIB && bytes.byteLength > 40 * CHUNK_BYTES, `${(bytes.byteLength / MIB).toFixed(1)} MiB`)
  let seen: unknown
  const answered = answer(inbound, async (model, version, got) => {
    seen = { model, version }
    // the answer is as large as the question
    return { status: 200, body: { echo: got } }
  })
  const reply = await forwardPredict(outbound, { model: 'wide', version: '2', body: bytes }, { maxReplyBytes: 64 * MIB })
  await answered
  t.same(seen, { model: 'wide', version: '2' })
  t.equal(reply.status, 200)
  t.same(reply.body, { echo: body }, 'the body arrived whole and came back whole')
})

t.test('past the limit at the sending end: refused before anything is sent', async t => {
  const err = t.throws(() => encodePredictBody(bodyOf(2 * MIB), MIB)) as BodyTooLargeError
  t.type(err, BodyTooLargeError)
  t.match(err, { code: 'ERR_BODY_TOO_LARGE', field: 'body', limit: MIB })
  t.equal(errorReply(err).status, 413)
})

t.test('past the answering node\'s own limit: a 413 answer (the body is read and dropped), never a stream failure', async t => {
  const [outbound, inbound] = await streamPair()
  let handled = false
  const answered = answer(inbound, async () => { handled = true; return { status: 200, body: {} } }, { maxBodyBytes: MIB })
  const reply = await forwardPredict(outbound, { model: 'm', body: encodePredictBody(bodyOf(3 * MIB), 16 * MIB) })
  await answered
  t.equal(reply.status, 413)
  t.match(reply.body, { code: 'ERR_BODY_TOO_LARGE', message: /this node's limit is 1048576/ })
  t.notOk(handled, 'the model never saw it')
})

t.test('a node over its budget of bodies in hand refuses with a clear 503 that the router takes elsewhere', async t => {
  const [outbound, inbound] = await streamPair()
  const answered = answer(inbound, async () => ({ status: 200, body: {} }), { admit: bytes => new OverloadedError(`busy: ${bytes}`) })
  const reply = await forwardPredict(outbound, { model: 'm', body: encodePredictBody({ instances: [[1]] }, MIB) })
  await answered
  t.equal(reply.status, 503)
  t.equal((reply.body as { code: string }).code, 'ERR_OVERLOADED')
})

t.test('an answer larger than the asking node takes is replaced by a 502 saying so', async t => {
  const [outbound, inbound] = await streamPair()
  const answered = answer(inbound, async () => ({ status: 200, body: { big: 'x'.repeat(64 * 1024) } }))
  const reply = await forwardPredict(outbound, { model: 'm', body: encodePredictBody({ instances: [[1]] }, MIB) }, { maxReplyBytes: 16 * 1024 })
  await answered
  t.equal(reply.status, 502)
  t.match(reply.body, { code: 'ERR_REPLY_TOO_LARGE', message: /at most 16384/ })
})

t.test('a body that is not JSON is a 400 naming the body', async t => {
  const [outbound, inbound] = await streamPair()
  const answered = answer(inbound, async () => ({ status: 200, body: {} }))
  const reply = await forwardPredict(outbound, { model: 'm', body: new TextEncoder().encode('{"instances": [1, 2') })
  await answered
  t.equal(reply.status, 400)
  t.match(reply.body, { field: 'body', message: /predict-request: body is not valid JSON/ })
})

t.test('frames that do not add up to the announced length fail the stream, not the process', async t => {
  for (const [what, frames] of [['more bytes than announced', [new Uint8Array(10), new Uint8Array(10)]], ['fewer, then the end', [new Uint8Array(5)]]] as const) {
    const [outbound, inbound] = await streamPair()
    let handled = false
    const answered = answer(inbound, async () => { handled = true; return { status: 200, body: {} } })
    const lp = lpStream(outbound)
    await lp.write(predictRequestHeaderCodec.encode({ model: 'm', bytes: 12, maxReplyBytes: 1024 }))
    for (const f of frames) await lp.write(f)
    await outbound.close()
    await t.rejects(answered, `${what}: the answering side fails this stream`)
    t.notOk(handled, 'and never calls the model')
  }
})

t.test('the request id travels in the header and reaches the handler; a bad one is refused naming the field', async t => {
  const [outbound, inbound] = await streamPair()
  let got: string | undefined
  const answered = answerPredict(inbound, async (_m, _v, _b, _a, requestId) => { got = requestId; return { status: 200, body: {} } }, { refuse: err => errorReply(err) })
  await forwardPredict(outbound, { model: 'm', body: encodePredictBody({ instances: [[1]] }, MIB), requestId: '4f1c2d9e-aaaa-4bbb-8ccc-0123456789ab' })
  await answered
  t.equal(got, '4f1c2d9e-aaaa-4bbb-8ccc-0123456789ab')

  for (const [what, requestId] of [['too long', 'a'.repeat(MAX_REQUEST_ID_LENGTH + 1)], ['a newline', 'abc\ndef'], ['a space', 'a b'], ['empty', ''], ['a number', 42]] as const) {
    const err = t.throws(() => predictRequestHeaderCodec.decode(predictRequestHeaderCodec.encode({ model: 'm', bytes: 0, maxReplyBytes: 1024, requestId } as any)), what) as InvalidMessageError
    t.match(err, { code: 'ERR_INVALID_MESSAGE', field: 'requestId' }, `${what}: refused naming requestId`)
  }
})

t.test('requestIdAt: the client\'s id when valid, a fresh UUID when absent, a field-named 400 otherwise', async t => {
  t.equal(requestIdAt('order-17:retry', 'headers.idempotency-key'), 'order-17:retry')
  t.match(requestIdAt(undefined, 'headers.x-request-id'), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
  t.not(requestIdAt(undefined, 'x'), requestIdAt(undefined, 'x'), 'fresh each time')
  for (const bad of ['a'.repeat(MAX_REQUEST_ID_LENGTH + 1), 'has space', '-leading', 'tab\there', ['a', 'b'], Buffer.from('x')]) {
    const err = t.throws(() => requestIdAt(bad, 'headers.idempotency-key')) as InvalidMessageError
    t.match(err, { code: 'ERR_INVALID_MESSAGE', field: 'headers.idempotency-key' })
    t.equal(errorReply(err).status, 400)
  }
})

t.test('to a node of an earlier release (predict 2.0.0) the header goes without the id', async t => {
  const [outbound, inbound] = await streamPair()
  const lp = lpStream(inbound)
  const sent = forwardPredict(outbound, { model: 'm', body: encodePredictBody(null, MIB), requestId: 'r1' }, { protocol: PREDICT_PROTOCOL_2_0, timeoutMs: 500 }).catch(() => {})
  const head = predictRequestHeaderCodec.decode(await lp.read())
  t.notOk('requestId' in head, 'no requestId')
  inbound.abort(new Error('done'))
  await sent
})
