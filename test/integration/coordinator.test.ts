import { join } from 'node:path'
import t from 'tap'
import { freePort } from '../helpers/ports.ts'
import { CLI, Cluster, waitFor } from '../helpers/cluster.ts'
import { CoordinatorProcess } from '../helpers/coordinator-process.ts'
import { run as exec, start } from '../helpers/processes.ts'

// three agents and a coordinator as separate processes over real TCP on 127.0.0.1
const cluster = await Cluster.create()
const coordinator = new CoordinatorProcess({ dataDir: join(cluster.root, 'coordinator'), fleetDir: cluster.fleetDir })
t.teardown(async () => {
  await coordinator.stop()
  await cluster.close()
})
await cluster.addNode('a', { role: 'server', labels: { zone: 'lab' } })
await cluster.addNode('b', { labels: { zone: 'lab', site: 'north' } })
await cluster.addNode('c', { labels: { zone: 'lab', site: 'south' } })
const agents = ['a', 'b', 'c']
await Promise.all(agents.map(async n => await cluster.start(n)))
const agentIds = agents.map(n => cluster.node(n).peerId)
// the coordinator joins through an agent: the agents do not need it to find each other
coordinator.init.bootstrap = [cluster.node('a').multiaddr]
await coordinator.start()
const password = coordinator.printedPassword()

async function nodes (token: string): Promise<Map<string, any>> {
  const res = await coordinator.request('GET', '/api/v1/nodes', { token })
  return new Map(res.body.nodes.map((n: any) => [n.peerId, n]))
}

await t.test('the coordinator joins the mesh as a peer and shows every node', async t => {
  t.match(password, /^[A-Za-z0-9]{20}$/, 'the first admin\'s password was printed once')
  const token = await coordinator.login('admin', password!)
  const seen = await waitFor(async () => {
    const view = await nodes(token)
    return agentIds.every(id => view.get(id)?.state === 'alive') && view.get(coordinator.runtime!.peerId)?.role === 'coordinator' ? view : undefined
  }, 'the coordinator to see all three agents alive', 30_000)
  t.equal(seen.size, 4)
  t.match(seen.get(cluster.node('b').peerId), { role: 'gateway', labels: { site: 'north' }, state: 'alive' })
  t.match(seen.get(cluster.node('a').peerId), { role: 'server' })
  await waitFor(async () => (await cluster.members('c')).get(coordinator.runtime!.peerId)?.state === 'alive', 'the agents to see the coordinator')
  t.equal((await cluster.members('c')).get(coordinator.runtime!.peerId)?.role, 'coordinator', 'agents see a coordinator member')
})

await t.test('one search finds the logs of all three agents', async t => {
  const token = await coordinator.login('admin', password!)
  const search = await waitFor(async () => {
    const res = await coordinator.request('GET', '/api/v1/logs?text=agent%20started&limit=50', { token })
    return agentIds.every(id => res.body.entries.some((e: any) => e.node === id)) ? res.body : undefined
  }, 'agent start lines from every agent', 20_000)
  for (const id of agentIds) {
    t.ok(search.entries.some((e: any) => e.node === id && e.msg === 'agent started' && e.service === 'agent'), `found "agent started" from ${id.slice(-6)}`)
    t.notOk(search.nodes.find((n: any) => n.peerId === id).error, `${id.slice(-6)} answered`)
  }
  const times = search.entries.map((e: any) => e.time)
  t.same(times, [...times].sort((x: number, y: number) => y - x), 'merged newest first')

  const b = cluster.node('b').peerId
  const one = await coordinator.request('GET', `/api/v1/logs?node=${b}&service=membership&limit=20`, { token })
  t.ok(one.body.entries.length > 0 && one.body.entries.every((e: any) => e.node === b && e.service === 'membership'), 'filtered by node and service')

  const download = await coordinator.request('GET', '/api/v1/logs/download?level=info&since=10m&order=asc', { token })
  t.equal(download.status, 200)
  const lines = download.text.trim().split('\n').map(l => JSON.parse(l))
  t.ok(agentIds.every(id => lines.some(l => l.node === id)), `the NDJSON download (${lines.length} lines) holds lines of every agent`)
  t.ok(lines.every((l, i) => i === 0 || l.time >= lines[i - 1].time), 'in time order')
})

await t.test('stop the coordinator: the agents keep running their mesh', async t => {
  await coordinator.stop()
  t.equal(coordinator.child?.exitCode, 0, 'the coordinator stopped cleanly')
  await waitFor(async () => (await cluster.members('a')).get(coordinator.runtime!.peerId)?.state === 'dead', 'the agents to notice')
  const c = cluster.node('c')
  const key = `instance/${c.peerId}/while-coordinator-down`
  t.equal((await cluster.request('c', 'PUT', `/v1/registry/${key}`, { value: { ok: true } })).status, 200)
  await waitFor(async () => {
    const everywhere = await Promise.all(agents.map(async n => (await cluster.get(n, `/v1/registry/${key}`).catch(() => null))?.value?.ok === true))
    const alive = await Promise.all(agents.map(async n => {
      const members = await cluster.members(n)
      return agentIds.every(id => members.get(id)?.state === 'alive')
    }))
    return everywhere.every(Boolean) && alive.every(Boolean)
  }, 'a write to reach every agent with the coordinator gone')
  for (const n of agents) {
    const members = await cluster.members(n)
    t.ok(agentIds.every(id => members.get(id)?.state === 'alive'), `${n} still sees all three agents alive`)
  }
})

await t.test('restart with TLS: users persist; a fresh device enrolls and joins the mesh', async t => {
  const cert = join(cluster.root, 'tls.crt')
  const key = join(cluster.root, 'tls.key')
  await exec('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert])
  await coordinator.start({ cert, key })
  t.match(coordinator.url, /^https:/)
  t.equal(coordinator.printedPassword(), undefined, 'no new admin on a later start')
  const token = await coordinator.login('admin', password!)
  t.pass('the admin logs in over TLS with the password from the first start')

  const created = await coordinator.request('POST', '/api/v1/enrollments', { token, body: { role: 'gateway', labels: { site: 'east' } } })
  t.equal(created.status, 201)
  const dir = join(cluster.root, 'enrolled')
  const p2pPort = await freePort()
  const apiPort = await freePort()
  const env = { ...process.env, NODE_EXTRA_CA_CERTS: cert }
  const args = [CLI, 'enroll', '--coordinator', coordinator.url, '--token', created.body.token, '--data', dir, '--labels', 'zone=lab', '--listen', `/ip4/127.0.0.1/tcp/${p2pPort}`, '--api-port', String(apiPort)]
  const { stdout } = await exec(process.execPath, args, { env })
  const peerId = /enrolled (\S+) as gateway/.exec(stdout)?.[1]
  t.ok(peerId, `gatemesh enroll: ${stdout.split('\n')[0]}`)

  const again = await exec(process.execPath, [...args.slice(0, 6), '--data', join(cluster.root, 'second')], { env }).then(() => 0, (err: any) => err)
  t.equal(again.code, 1, 'the same join token cannot enroll a second device')
  t.match(again.stderr, /already used/)
  const plain = await exec(process.execPath, [CLI, 'enroll', '--coordinator', 'http://coordinator.example:7480', '--token', created.body.token, '--data', join(cluster.root, 'third')]).then(() => 0, (err: any) => err)
  t.equal(plain.code, 2, 'plain HTTP to another host is refused before anything is sent')

  // the CLI from sources: enrolling and running what was enrolled is what a user does
  start(process.execPath, [CLI, 'agent', '--data', dir], { name: 'enrolled agent', t })
  const joined = await waitFor(async () => {
    const n = (await nodes(token)).get(peerId!)
    return n?.state === 'alive' ? n : undefined
  }, 'the enrolled node to be alive on the coordinator', 30_000)
  t.match(joined, { role: 'gateway', labels: { site: 'east', zone: 'lab' } })
  await waitFor(async () => (await cluster.members('b')).get(peerId!)?.state === 'alive', 'the other agents to see the enrolled node')
  t.pass('the enrolled node is a mesh member everywhere')
})
