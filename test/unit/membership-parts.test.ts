import t from 'tap'
import { pino } from 'pino'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { LocalHealth, StallWatch } from '../../node/membership/awareness.ts'
import { BroadcastQueue } from '../../node/membership/broadcasts.ts'
import { ClockOffsets } from '../../node/membership/clock.ts'
import { HealthReporter, type HealthReporterInit, type HealthSample } from '../../node/membership/health.ts'
import { RecordVerifier, signAccusation, signAlive } from '../../node/membership/records.ts'
import { RecordAudit } from '../../node/membership/roster.ts'
import { remainingSuspicionTime, retransmitLimit, Suspicion, suspicionTimeoutMs } from '../../node/membership/suspicion.ts'
import { MemberTable, type MemberState } from '../../node/membership/table.ts'
import { sleep, waitFor } from '../helpers/cluster.ts'

const quiet = pino({ level: 'silent' })

t.test('local health: clamped score, stretched timeouts, an event when healthy flips', async t => {
  const h = new LocalHealth({ maxMultiplier: 4 })
  const flips: boolean[] = []
  h.addEventListener('health:local', evt => { flips.push(evt.detail.healthy) })
  t.equal(h.scale(500), 500)
  h.apply(2, 'missed nacks')
  t.equal(h.score, 2)
  t.equal(h.scale(500), 1500, 'timeouts stretch by score + 1')
  h.apply(10, 'stall')
  t.equal(h.score, 3, 'capped below the multiplier')
  h.apply(-1, 'probe ok')
  h.apply(-5, 'probe ok')
  t.equal(h.score, 0, 'never below zero')
  t.same(flips, [false, true], 'flipped to unhealthy once and back once')
  t.same(h.state(), { score: 0, healthy: true })
})

t.test('stall watch: a timer far later than due is a stall', async t => {
  let now = 0
  const stalls: number[] = []
  const w = new StallWatch(late => { stalls.push(late) }, { thresholdMs: 2000, tickMs: 200, monotonic: () => now })
  w.start()
  w.stop()
  now = 200
  w.check()
  now = 400
  w.check()
  t.same(stalls, [], 'on time: nothing')
  now = 5400 // SIGSTOP for five seconds
  w.check()
  t.equal(stalls.length, 1)
  t.ok(stalls[0]! >= 4800, `the stall is measured (${stalls[0]} ms)`)
  t.ok(w.stalledSince(1000), 'a probe started before it is inconclusive')
  t.notOk(w.stalledSince(6000), 'one started after it is not')
})

t.test('suspicion: starts long, shrinks with independent confirmations, fires once', async t => {
  t.equal(remainingSuspicionTime(0, 3, 0, 1000, 6000), 6000, 'no confirmations: the maximum')
  t.equal(remainingSuspicionTime(3, 3, 0, 1000, 6000), 1000, 'k confirmations: the minimum')
  const one = remainingSuspicionTime(1, 3, 0, 1000, 6000)
  t.ok(one < 6000 && one > 1000, `one confirmation is in between (${one})`)
  t.equal(remainingSuspicionTime(0, 3, 2500, 1000, 6000), 3500, 'time already waited counts')
  t.equal(suspicionTimeoutMs(1, 20, 1000), 1301, 'memberlist: mult · log10(N) · interval')
  t.equal(suspicionTimeoutMs(1, 5, 1000), 1000, 'at least one interval')
  t.equal(retransmitLimit(4, 20), 8, 'mult · ceil(log10(N + 1))')

  const fired: number[] = []
  const s = new Suspicion('a', 2, 50, 5000, n => { fired.push(n) })
  t.notOk(s.confirm('a'), 'the first accuser is not a confirmation')
  t.ok(s.confirm('b'))
  t.notOk(s.confirm('b'), 'nor is the same one twice')
  t.ok(s.confirm('c'))
  t.notOk(s.confirm('d'), 'past k, more do not count')
  await waitFor(() => fired.length === 1, 'the timer at its minimum', 2000, 10)
  t.same(fired, [2])
  s.cancel()
})

t.test('broadcast queue: newest record per member, sent a bounded number of times', async t => {
  const key = await generateKeyPair('Ed25519')
  const id = peerIdFromPrivateKey(key).toString()
  const q = new BroadcastQueue(() => 3)
  q.push(await signAlive(key, id, 1, []))
  q.push(await signAlive(key, id, 2, []))
  t.equal(q.size, 1, 'one entry per member')
  const first = q.take(8, 10_000)
  t.equal(first[0]!.inc, 2, 'the newer record replaced the older')
  q.take(8, 10_000)
  q.take(8, 10_000)
  t.same(q.take(8, 10_000), [], 'gone after three sends')
  q.push(await signAlive(key, id, 3, []))
  t.same(q.take(8, 10_000, id), [], 'not sent to the member it is about')
  t.same(q.take(8, 10), [], 'nor past the byte budget')
})

t.test('clock offsets: NTP-style estimate, majority verdict, restart on a step', async t => {
  let wall = 1_000_000
  let mono = 0
  const c = new ClockOffsets({ limitMs: 15_000, now: () => wall, monotonic: () => mono })
  // a peer 5 minutes ahead; 10 ms round trip each way symmetric
  for (const rtt of [10, 12, 400]) c.sample('fast', 1000, 1000 + rtt, 1000 + rtt / 2 + 300_000, rtt)
  c.sample('fast', 1000, 3000, 0, 2000)
  t.equal(c.of('fast')?.offsetMs, 300_000, 'offset estimated; a sample with a 2 s round trip is ignored')
  t.ok(c.skewed('fast'))
  c.sample('ok1', 1000, 1002, 1001, 2)
  c.sample('ok2', 1000, 1002, 1003, 2)
  t.same(c.self(['fast', 'ok1', 'ok2']), { skewed: false, offsetMs: -2, peers: 3, disagreeing: 1, limitMs: 15_000 }, 'one odd peer does not make us skewed')
  t.equal(c.self(['fast']).skewed, false, 'one peer alone cannot tell who is wrong')
  // now we are the odd one: everyone is 5 minutes ahead of us
  c.sample('ok1', 1000, 1002, 301_001, 2)
  c.sample('ok1', 1000, 1002, 301_001, 2)
  c.sample('ok2', 1000, 1002, 301_001, 2)
  c.sample('ok2', 1000, 1002, 301_001, 2)
  const self = c.self(['fast', 'ok1', 'ok2'])
  t.equal(self.skewed, true, 'most peers disagree: we are skewed')
  t.equal(self.offsetMs, -300_000, 'five minutes behind')
  mono += 1000
  wall += 1000
  t.equal(c.checkStep(), undefined, 'no step while both clocks run together')
  wall += 300_000 // NTP fixed us
  t.equal(c.checkStep(), 300_000, 'a step is seen')
  t.equal(c.self(['fast', 'ok1', 'ok2']).peers, 0, 'and every estimate starts over')
})

t.test('record audit: the certificate wins, disagreement is counted and warned about once', async t => {
  const claims = { sub: 'p', role: 'gateway' as const, labels: {}, fleet: 'f', iat: 0, exp: 2 ** 40 }
  const counted: string[] = []
  const warnings: unknown[] = []
  const logger = { warn: (o: unknown) => { warnings.push(o) } } as any
  const audit = new RecordAudit({ self: 'me', trust: { claimsFor: () => claims, isDenied: () => false, learnCertificate: async () => claims }, logger, metrics: { recordMismatch: f => { counted.push(f) } } })
  t.ok(await audit.check('p', { role: 'gateway', labels: {} }), 'a matching record')
  t.same(counted, [])
  t.ok(await audit.check('p', { role: 'server', labels: { site: 'north' } }), 'a lying record is still from a member')
  t.same(counted, ['role', 'labels'], 'both fields counted')
  await audit.check('p', { role: 'server', labels: { site: 'north' } })
  t.equal(counted.length, 4, 'counted every time')
  t.equal(warnings.length, 1, 'warned once')
  const deep: any = {}
  let cur = deep
  for (let i = 0; i < 100_000; i++) cur = cur[`k${i % 70}`] = {}
  t.ok(await audit.check('p', { labels: deep }), 'a hostile labels object is bounded, not walked')
  const revoked = new RecordAudit({ self: 'me', trust: { claimsFor: () => claims, isDenied: () => true, learnCertificate: async () => claims }, logger })
  t.notOk(await revoked.check('p', { role: 'gateway' }), 'a denied peer is not admitted')
})

/** A health reporter over a sample and instance counts the test moves, and the writes it made. */
function reporter (init: HealthReporterInit): { r: HealthReporter, writes: unknown[], now: { sample: HealthSample, instances: { total: number, running: number } } } {
  const writes: unknown[] = []
  const now = {
    sample: { cpuPct: 10, processCpuPct: 1, rssBytes: 1, memFreeBytes: 500, memTotalBytes: 1000, load: [0.5, 0.5, 0.5], uptimeSec: 1, seq: 1, ts: 1 } as HealthSample,
    instances: { total: 0, running: 0 }
  }
  const r = new HealthReporter({ peerId: 'me', registry: { set: async (_k: string, v: unknown) => { writes.push(v); return undefined as any } }, sampler: { sample: () => ({ ...now.sample }) }, instances: () => ({ ...now.instances }), logger: quiet }, init)
  return { r, writes, now }
}

t.test('health reporter: writes on change or when due, not on every sample', async t => {
  const { r, writes, now } = reporter({ maxIntervalMs: 200, minIntervalMs: 0 })
  t.ok(await r.report(true), 'the first write')
  t.notOk(await r.report(), 'nothing changed: no write')
  now.sample = { ...now.sample, cpuPct: 12 }
  t.notOk(await r.report(), 'a small change: no write')
  now.sample = { ...now.sample, cpuPct: 40 }
  t.ok(await r.report(), 'CPU moved 30 points: written')
  now.instances.total = 1
  t.ok(await r.report(), 'an instance appeared: written')
  now.sample = { ...now.sample, memFreeBytes: 100 }
  t.ok(await r.report(), 'memory moved 40 points: written')
  await sleep(250)
  t.ok(await r.report(), 'due after maxIntervalMs: written')
  t.equal(writes.length, 5)
})

t.test('health reporter: a metric that moves waits minIntervalMs; instance counts go at once', async t => {
  const { r, writes, now } = reporter({ maxIntervalMs: 60_000, minIntervalMs: 300 })
  t.ok(await r.report(true), 'the first write')
  now.sample = { ...now.sample, cpuPct: 80, load: [4, 1, 1] }
  t.notOk(await r.report(), 'CPU and load moved, but the last write is too recent')
  now.instances.running = 1
  t.ok(await r.report(), 'an instance started: written at once')
  now.sample = { ...now.sample, cpuPct: 10 }
  t.notOk(await r.report(), 'CPU moved back, too soon after the instance write')
  await sleep(350)
  t.ok(await r.report(), 'past minIntervalMs, the change is written')
  t.equal(writes.length, 3)
})

t.test('table: a node that doubts itself postpones its verdict; a record from an earlier run of ours is outbid', async t => {
  const keys = await Promise.all([0, 1, 2].map(async () => await generateKeyPair('Ed25519')))
  const [me, other, third] = keys.map(k => peerIdFromPrivateKey(k).toString()) as [string, string, string]
  const health = new LocalHealth()
  const queue = new BroadcastQueue(() => 4)
  const states: Array<[string, MemberState]> = []
  const table = new MemberTable({
    self: me,
    privateKey: keys[0]!,
    verifier: new RecordVerifier(),
    admits: () => true,
    health,
    stall: new StallWatch(() => {}, { thresholdMs: 60_000 }),
    queue,
    suspicion: () => ({ minMs: 50, maxMs: 50, k: 0 }),
    postponeMs: () => 50,
    onState: (id, state) => { states.push([id, state]) },
    onReject: () => {},
    onStranger: () => {},
    logger: quiet,
    monotonic: () => performance.now()
  })
  await table.init([], 100)
  await table.merge(await signAlive(keys[1]!, other, 7, []), 'gossip', other)
  t.equal(table.entries.get(other)?.state, 'alive')
  health.apply(2, 'test')
  await table.accuse(other)
  t.equal(table.entries.get(other)?.state, 'suspect')
  await sleep(400)
  t.equal(table.entries.get(other)?.state, 'suspect', 'still only suspect while we are unhealthy')
  health.apply(-2, 'test')
  await waitFor(() => table.entries.get(other)?.state === 'dead', 'dead once healthy again', 2000, 10)
  t.pass('declared dead once healthy')

  // someone holds an alive of ours, signed by us, from an earlier run at a higher incarnation
  await table.merge(await signAlive(keys[0]!, me, 5000, []), 'sync', other)
  t.equal(table.self.inc, 5001, 'we announce past it')
  // an accusation signed by someone other than who it names as accuser is ignored
  const alive = await signAlive(keys[2]!, third, 3, [])
  await table.merge(alive, 'gossip', other)
  await table.merge({ ...alive, acc: { ...(await signAccusation(keys[1]!, 'd', third, 3, other)), from: me } }, 'gossip', other)
  t.equal(table.entries.get(third)?.state, 'alive', 'a forged accusation does nothing')
  await table.merge({ ...alive, acc: await signAccusation(keys[2]!, 'd', third, 3, third) }, 'gossip', other)
  t.equal(table.entries.get(third)?.state, 'dead', 'a member\'s own dead (leaving) is final')
})
