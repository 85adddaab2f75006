import t from 'tap'
import fc from 'fast-check'
import { certCodec } from '../../protocols/cert-exchange/index.ts'
import { ProtocolMessageError } from '../../protocols/errors.ts'
import { deltaCodec } from '../../protocols/registry/delta.ts'
import { BUCKETS, syncCodec } from '../../protocols/registry-sync/index.ts'
import type { JsonCodec } from '../../protocols/codec.ts'

const entry = { k: 'node/12D3KooWAAAAAAAAAA', v: '{"a":1}', t: [1700000000000, 0], w: '12D3KooWAAAAAAAAAA', s: 'c2lnbmF0dXJlLWJ5dGVz' }

const valid: Array<[string, JsonCodec<any>, unknown]> = [
  ['registry-delta', deltaCodec, { entries: [entry] }],
  ['registry-sync digest', syncCodec, { type: 'digest', buckets: Array(BUCKETS).fill('0123456789abcdef') }],
  ['registry-sync entries', syncCodec, { type: 'entries', entries: [entry] }],
  ['registry-sync end', syncCodec, { type: 'end' }],
  ['cert-exchange', certCodec, { cert: 'eyJhbGciOiJFZERTQSJ9.e30.c2ln' }]
]

function decodeFails (codec: JsonCodec<any>, bytes: Uint8Array): string | undefined {
  try {
    codec.decode(bytes)
    return undefined
  } catch (err) {
    if (!(err instanceof ProtocolMessageError)) throw err
    return err.code
  }
}

for (const [name, codec, message] of valid) {
  t.test(name, async t => {
    const bytes = codec.encode(message as any)
    t.same(codec.decode(bytes), message, 'round trip')

    for (let cut = 0; cut < bytes.length; cut++) {
      if (decodeFails(codec, bytes.subarray(0, cut)) == null) t.fail(`truncated to ${cut} bytes decoded`)
    }
    t.pass('every truncation is refused with a protocol error')

    fc.assert(fc.property(fc.uint8Array({ maxLength: 512 }), junk => decodeFails(codec, junk) != null || isValidByChance(codec, junk)))
    t.pass('random bytes are refused with a protocol error')

    fc.assert(fc.property(fc.json(), json => {
      const bytes = new Uint8Array([codec.version, ...new TextEncoder().encode(json)])
      return decodeFails(codec, bytes) != null || isValidByChance(codec, bytes)
    }))
    t.pass('random JSON is refused unless it happens to match the schema')

    const wrongVersion = new Uint8Array(bytes)
    wrongVersion[0] = codec.version + 1
    t.equal(decodeFails(codec, wrongVersion), 'ERR_UNSUPPORTED_VERSION')

    const oversized = new Uint8Array(codec.maxBytes + 1).fill(0x20)
    oversized[0] = codec.version
    t.equal(decodeFails(codec, oversized), 'ERR_MESSAGE_TOO_LARGE')

    const extra = { ...(message as object), surprise: true }
    t.equal(decodeFails(codec, new Uint8Array([codec.version, ...new TextEncoder().encode(JSON.stringify(extra))])), 'ERR_INVALID_MESSAGE', 'unknown fields are refused')
  })
}

t.test('schema errors name the field', async t => {
  const bad = { entries: [{ ...entry, k: '../etc/passwd' }] }
  const bytes = new Uint8Array([1, ...new TextEncoder().encode(JSON.stringify(bad))])
  try {
    deltaCodec.decode(bytes)
    t.fail('decoded')
  } catch (err: any) {
    t.equal(err.code, 'ERR_INVALID_MESSAGE')
    t.equal(err.field, 'registry-delta.entries.0.k')
  }
})

t.test('encoding refuses a message over the limit', async t => {
  t.throws(() => certCodec.encode({ cert: 'x'.repeat(20_000) }), { code: 'ERR_MESSAGE_TOO_LARGE' })
})

t.test('a frame nested past the bound is refused before it is parsed or validated', async t => {
  const deep = new TextEncoder().encode('\u0001' + '{"entries":' + '['.repeat(100_000) + ']'.repeat(100_000) + '}')
  t.throws(() => deltaCodec.decode(deep), { code: 'ERR_MESSAGE_TOO_DEEP' })
  const tricky = new TextEncoder().encode('\u0001{"cert":"' + '['.repeat(1000) + '\\"' + '"}')
  t.equal(certCodec.decode(tricky).cert.length, 1001, 'brackets and escaped quotes inside a string do not count')
})

/** A random input that is a valid message after all (vanishingly rare, but not an error). */
function isValidByChance (codec: JsonCodec<any>, bytes: Uint8Array): boolean {
  try {
    codec.decode(bytes)
    return true
  } catch {
    return false
  }
}
