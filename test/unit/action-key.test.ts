import t from 'tap'
import { actionKey } from '../../node/outbox/dedupe.ts'

const base = { requestId: 'req-1', instance: 'notify', rule: 'alert', action: 0, row: 0 }

t.test('the same action of the same request has one key on every node; any other part changes it', async t => {
  const key = actionKey(base)
  t.match(key, /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, 'a version-8 UUID (fits Idempotency-Key, Message-ID and MQTT user properties)')
  t.equal(actionKey({ ...base }), key, 'deterministic')
  const others = [{ requestId: 'req-2' }, { instance: 'other' }, { rule: 'other' }, { action: 1 }, { row: 1 }].map(p => actionKey({ ...base, ...p }))
  t.equal(new Set([key, ...others]).size, 6, 'request, instance, rule, action and row each make a different key')
  // parts are joined unambiguously: moving a character between parts is another key
  t.not(actionKey({ ...base, requestId: 'a', instance: 'bc' }), actionKey({ ...base, requestId: 'ab', instance: 'c' }))
})
