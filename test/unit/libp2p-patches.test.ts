import t from 'tap'
import { yamux } from '@chainsafe/libp2p-yamux'
import { LengthPrefixedDecoder, multiaddrConnectionPair } from '@libp2p/utils'
import type { Stream } from '@libp2p/interface'

// The two fixes patches/ applies to libp2p (README, "Patched dependencies"):
// without them each test below fails.

t.test('yamux: a receiver grants more window once half of it is used, not after every frame', async t => {
  const [outbound, inbound] = multiaddrConnectionPair()
  // what the receiving side sends back: window updates (and the stream's ACK)
  let framesBack = 0
  const send = inbound.send.bind(inbound)
  inbound.send = (data: Parameters<typeof inbound.send>[0]) => { framesBack++; return send(data) }
  const client = yamux({ enableKeepAlive: false })().createStreamMuxer(outbound)
  const server = yamux({ enableKeepAlive: false })().createStreamMuxer(inbound)
  t.teardown(() => { client.abort(new Error('done')); server.abort(new Error('done')) })
  const messages = 200
  const got = new Promise<number>(resolve => {
    server.addEventListener('stream', evt => {
      const stream: Stream = evt.detail
      let bytes = 0
      stream.addEventListener('message', e => {
        bytes += e.data.byteLength
        if (bytes >= messages * 100) resolve(bytes)
      })
    })
  })
  const stream = await client.createStream()
  for (let i = 0; i < messages; i++) {
    if (!stream.send(new Uint8Array(100))) await new Promise(resolve => stream.addEventListener('drain', resolve, { once: true }))
    // one frame each: let the receiver handle it before the next
    await new Promise(resolve => setImmediate(resolve))
  }
  t.equal(await got, messages * 100, 'every byte arrived')
  t.ok(framesBack <= 3, `${messages} frames of 100 bytes (20 KB of a 256 KB window) answered with ${framesBack} frames (one per frame unpatched)`)
})

t.test('length-prefixed decoding does not throw (and catch) at the end of every chunk', async t => {
  let calls = 0
  const decoder = new LengthPrefixedDecoder({
    lengthDecoder: (buf) => {
      calls++
      if (buf.byteLength < 2) throw new RangeError('Could not decode int16BE')
      const bytes = buf.subarray(0, 2)
      return bytes[0]! * 256 + bytes[1]!
    },
    encodingLength: () => 2
  })
  const frames = [...decoder.decode(Uint8Array.from([0, 3, 7, 8, 9, 0, 1, 5]))]
  t.same(frames.map(f => [...f.subarray()]), [[7, 8, 9], [5]], 'both frames decoded')
  t.equal(calls, 2, 'the length is read once per frame; not again on the empty rest')
  t.same([...decoder.decode(Uint8Array.from([0]))], [], 'half a length prefix waits for more')
  t.same([...decoder.decode(Uint8Array.from([2, 4, 2]))].map(f => [...f.subarray()]), [[4, 2]], 'and decodes once the rest comes')
})
