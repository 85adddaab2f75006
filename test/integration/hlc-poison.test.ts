import { openSync, closeSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { loadPeerKey } from '../../node/identity/peer-key.ts'
import { signEntry } from '../../node/registry/entry.ts'
import { LevelRegistryStore } from '../../node/registry/store.ts'
import { openDatabase } from '../../node/store/db.ts'
import { MAX_COUNTER } from '../../protocols/registry/wire.ts'
import { Cluster, sleep, waitFor } from '../helpers/cluster.ts'
import { start } from '../helpers/processes.ts'
import { agentLog, metric, rogueReport, startRogue, startAll } from '../helpers/trust.ts'

// Row 2 of issue 14: a peer with a valid certificate stamps entries [now+50 s, 2^31].
// Three real agents and a rogue process with a fleet certificate, over TCP on 127.0.0.1.
const cluster = await Cluster.create()
t.teardown(async () => { await cluster.close() })
const names = ['a', 'b', 'c']
await cluster.addNode('a', { role: 'server' })
await cluster.addNode('b')
await cluster.addNode('c')
await startAll(cluster, names)
const peer = (n: string): string => cluster.node(n).peerId
const allAlive = async (): Promise<boolean> => (await Promise.all(names.map(async n => {
  const members = await cluster.members(n)
  return names.every(m => members.get(peer(m))?.state === 'alive')
}))).every(Boolean)
await waitFor(allAlive, 'three agents alive everywhere', 60_000)

const rogue = await cluster.addNode('rogue', { bootstrap: ['a'] })

await t.test('poisoned stamps from a certified peer are refused or kept out of every clock', async t => {
  startRogue(t, rogue.dir, ['--poison'])
  await rogueReport(rogue.dir)
  const maxKey = `instance/${rogue.peerId}/poison-max`
  // the entry within the drift limit and the schema is the rogue's own to write: it lands, unadopted
  await waitFor(async () => (await Promise.all(names.map(async n => (await cluster.get(n, `/v1/registry/${maxKey}`).catch(() => null))?.ts?.[1] === MAX_COUNTER))).every(Boolean),
    'the [now+50 s, 2^31-1] entry on every agent', 60_000)
  t.pass('the entry at the counter\'s maximum, 50 s ahead, was stored everywhere')
  for (const n of names) {
    t.equal((await cluster.get(n, `/v1/registry/instance/${rogue.peerId}/poison-over`).catch((err: any) => err.status)), 404, `${n} never stored the [now+50 s, 2^31] entry`)
  }
  // gossip goes to the rogue's mesh peers only (no flood publishing), which need not include a:
  // whichever agents it reached refused it, and none forwarded it
  const refused = await waitFor(async () => {
    const counts = await Promise.all(names.map(async n => await metric(cluster, n, 'gatemesh_rejected_messages_total', { reason: 'ERR_INVALID_MESSAGE' })))
    return counts.some(c => c > 0) ? counts : undefined
  }, 'an agent to refuse and count the delta past the schema', 60_000)
  t.pass(`the delta past the schema was refused and counted (${names.map((n, i) => `${n}: ${refused[i]!}`).join(', ')})`)

  // honest writes keep flowing, stamped by the physical clock, accepted by every peer
  for (let i = 0; i < 5; i++) {
    for (const n of names) {
      const put = await cluster.request(n, 'PUT', `/v1/registry/instance/${peer(n)}/after-${i}`, { value: { i } })
      t.equal(put.status, 200, `${n} write ${i} accepted locally`)
      const ts = (put.body as any).ts as [number, number]
      t.ok(ts[0] < Date.now() + 5_000 && ts[1] < 1_000_000, `${n} write ${i} stamped ${JSON.stringify(ts)}: its clock adopted nothing`)
    }
    await sleep(500)
  }
  await waitFor(async () => (await Promise.all(names.flatMap(obs => names.map(async n => (await cluster.get(obs, `/v1/registry/instance/${peer(n)}/after-4`).catch(() => null))?.value?.i === 4)))).every(Boolean),
    'every honest write on every honest agent', 30_000)
  t.pass('every agent holds every other\'s writes')
  // nobody looked dead while it went on
  t.ok(await allAlive(), 'all three agents still see each other alive')
})

await t.test('an agent started on a poisoned database heals itself', async t => {
  await cluster.stop('c')
  const c = cluster.node('c')
  const { privateKey } = await loadPeerKey(c.dir)
  const rogueKey = (await loadPeerKey(rogue.dir)).privateKey
  const now = Date.now()
  const deep = '['.repeat(20_000) + ']'.repeat(20_000)
  // what earlier versions could leave on disk: stamps past the schema or far ahead, values nested without bound
  const poisoned = [
    await signEntry(privateKey, { k: `instance/${c.peerId}/overflowed`, v: '1', t: [now + 50_000, 2 ** 31 + 7], w: c.peerId }),
    await signEntry(privateKey, { k: `instance/${c.peerId}/far-future`, v: '1', t: [now + 7_200_000, 0], w: c.peerId }),
    await signEntry(rogueKey, { k: `instance/${rogue.peerId}/overflowed`, v: '1', t: [now, 2 ** 31], w: rogue.peerId }),
    await signEntry(rogueKey, { k: `instance/${rogue.peerId}/deep`, v: deep, t: [now, 0], w: rogue.peerId }),
    // valid, at the counter's maximum: kept, and the clock must carry rather than overflow
    await signEntry(privateKey, { k: `instance/${c.peerId}/at-max`, v: '1', t: [now + 10_000, MAX_COUNTER], w: c.peerId })
  ]
  const db = await openDatabase(c.dir)
  await new LevelRegistryStore(db).put(poisoned)
  await db.close()

  await startAll(cluster, ['c'])
  const healed = (await agentLog(c.dir)).filter(l => l.msg?.startsWith('registry healed at load'))
  t.equal(healed.length, 1, 'the start logged that it healed the registry')
  t.equal(healed[0]?.dropped, 4, `four poisoned entries dropped (${JSON.stringify(healed[0]?.reasons)})`)
  const entries = (await cluster.get('c', '/v1/registry?tombstones=true')).entries as Array<{ key: string, ts: [number, number] }>
  t.notOk(entries.some(e => e.ts[1] > MAX_COUNTER || e.ts[0] > Date.now() + 60_000), 'nothing past the schema or the drift limit is left')
  t.notOk(entries.some(e => e.key.endsWith('/overflowed') || e.key.endsWith('/far-future') || e.key.endsWith('/deep')), 'the poisoned keys are gone')
  t.ok(entries.some(e => e.key === `instance/${c.peerId}/at-max`), 'the valid entry at the counter\'s maximum stayed')

  // its writes flow again: stamped past its own stored maximum, within the schema, accepted by its peers
  const put = await cluster.request('c', 'PUT', `/v1/registry/instance/${c.peerId}/healed`, { value: true })
  t.equal(put.status, 200)
  const ts = (put.body as any).ts as [number, number]
  t.ok(ts[1] <= MAX_COUNTER && ts[0] > now + 10_000, `the next stamp ${JSON.stringify(ts)} is past its stored maximum and within the schema`)
  await waitFor(async () => (await Promise.all(['a', 'b'].map(async n => (await cluster.get(n, `/v1/registry/instance/${c.peerId}/healed`).catch(() => null))?.value === true))).every(Boolean), 'the healed agent\'s write on its peers', 30_000)
  t.pass('the healed agent\'s writes reach its peers')
  await waitFor(allAlive, 'all three alive again', 60_000)
  t.pass('and it is alive everywhere')
})

await t.test('an agent whose clock runs 5 minutes ahead: every peer says so at warn, names it and counts it', async t => {
  // a real agent under libfaketime (wall clock only: its timers keep real time)
  const skewed = await cluster.addNode('skewed', { bootstrap: ['a'] })
  const err = openSync(join(skewed.dir, 'stderr.log'), 'a')
  // the agent as shipped (the app bundle, as the cluster starts it), under faketime
  try {
    start('faketime', ['-f', '+300s', cluster.command.exec, ...cluster.command.args, 'agent', '--data', skewed.dir], {
      name: 'agent skewed (faketime +300s)',
      stdio: ['ignore', 'ignore', err],
      env: { ...cluster.command.env, FAKETIME_DONT_FAKE_MONOTONIC: '1' },
      t
    })
  } finally {
    closeSync(err)
  }
  await waitFor(async () => await metric(cluster, 'a', 'gatemesh_registry_refused_entries_total', { writer: skewed.peerId, reason: 'ERR_CLOCK_DRIFT' }) > 0, 'a to refuse the skewed agent\'s entries', 180_000, 500)
  const ahead = await metric(cluster, 'a', 'gatemesh_registry_writer_clock_ahead_ms', { writer: skewed.peerId })
  t.ok(ahead > 280_000 && ahead < 320_000, `a exports how far ahead its clock is (${ahead} ms)`)
  await sleep(5000)
  const warns = (await agentLog(cluster.node('a').dir)).filter(l => l.level === 'warn' && l.reason === 'ERR_CLOCK_DRIFT' && l.writer === skewed.peerId)
  t.ok(warns.length >= 1, 'a warned, naming the writer')
  t.match(warns[0]?.msg, /clock is (29\d|30\d) s ahead/, `with the offset: "${warns[0]?.msg}"`)
  const refused = await metric(cluster, 'a', 'gatemesh_registry_refused_entries_total', { writer: skewed.peerId, reason: 'ERR_CLOCK_DRIFT' })
  t.ok(refused > warns.length, `rate-limited: ${warns.length} warning(s) for ${refused} refusals`)
})
