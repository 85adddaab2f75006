/**
 * `npm run bench -- coordinator [--agents 3] [--connections 50] [--duration 10] [--logins 200]`
 *
 * A coordinator and N agents as separate processes on 127.0.0.1, then
 * concurrent HTTP clients (autocannon) against the coordinator:
 * - loginP99Ms: POST /api/v1/auth/login, 4 clients at once (scrypt-bound by design)
 * - nodesListRps: authenticated GET /api/v1/nodes (target ≥ 5000 req/s on 2 cores)
 * - authMeRps: GET /api/v1/auth/me with every token the logins produced, in rotation
 * - authVerifyOpsPerSec: access-token verifications per second in-process,
 *   each a full EdDSA signature check (the cache is bypassed); the cached
 *   path is reported as authVerifyCachedOpsPerSec
 */
import { generateKeyPairSync } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import autocannon from 'autocannon'
import { AccessTokens } from '../../coordinator/auth/access-tokens.ts'
import { Cluster, SOURCES_COMMAND, waitFor } from '../helpers/cluster.ts'
import { CoordinatorProcess } from '../helpers/coordinator-process.ts'
import { rssMb } from './scale/measure.ts'
import { round } from './stats.ts'
import type { BenchArgs } from './run.ts'

const PASSWORD = 'bench-admin-password'

async function cannon (opts: autocannon.Options): Promise<autocannon.Result> {
  return await new Promise((resolve, reject) => {
    autocannon(opts, (err, result) => { err == null ? resolve(result) : reject(err) })
  })
}

/** Full signature checks per second: every token is new to the verifier. */
async function verifyRate (cached: boolean): Promise<number> {
  const keys = generateKeyPairSync('ed25519')
  const issuer = new AccessTokens(keys)
  const tokens = await Promise.all(Array.from({ length: 3000 }, async (_, i) => (await issuer.issue({ username: `user${i}`, roles: ['operator'], tokenVersion: 1 })).token))
  const verifier = new AccessTokens(keys, { cacheSize: cached ? 10_000 : 1 })
  if (cached) for (const t of tokens) await verifier.verify(t)
  const start = performance.now()
  let n = 0
  while (performance.now() - start < 2000) {
    // with a cache of one entry, cycling through 3000 tokens never hits it
    await verifier.verify(tokens[n % tokens.length]!)
    n++
  }
  return n / ((performance.now() - start) / 1000)
}

export async function run (args: BenchArgs): Promise<Record<string, unknown>> {
  const agents = Number(args.agents ?? 3)
  const connections = Number(args.connections ?? 50)
  const duration = Number(args.duration ?? 10)
  const logins = Number(args.logins ?? 200)
  const log = (msg: string): void => { console.error(`[coordinator] ${msg}`) }

  // from sources: the coordinator ships as the npm package (images carry only the agent)
  const cluster = await Cluster.create({ sources: true })
  const coordinator = new CoordinatorProcess({ dataDir: join(cluster.root, 'coordinator'), fleetDir: cluster.fleetDir, command: SOURCES_COMMAND })
  try {
    await coordinator.addUser('admin', PASSWORD, { admin: true })
    for (let i = 0; i < agents; i++) await cluster.addNode(`n${i}`, { role: i === 0 ? 'server' : 'gateway', config: { logs: { stdout: false, level: 'info' } } })
    await Promise.all([...cluster.nodes.keys()].map(async n => await cluster.start(n)))
    coordinator.init.bootstrap = [cluster.node('n0').multiaddr]
    await coordinator.start()
    const token = await coordinator.login('admin', PASSWORD)
    await waitFor(async () => (await coordinator.request('GET', '/api/v1/nodes', { token })).body.nodes.filter((n: any) => n.state === 'alive').length === agents + 1, 'every node alive on the coordinator', 60_000)
    log(`${agents} agents and the coordinator up; coordinator at ${coordinator.url}`)
    const base = coordinator.url

    log(`logins: ${logins}, 4 at a time`)
    const issued: string[] = []
    const login = await cannon({
      url: `${base}/api/v1/auth/login`,
      connections: 4,
      amount: logins,
      timeout: 30,
      requests: [{
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ username: 'admin', password: PASSWORD }),
        onResponse: (status, body) => { if (status === 200) issued.push(JSON.parse(body).token) }
      }]
    })
    if (login.non2xx > 0 || login.errors > 0) throw new Error(`logins failed: ${login.non2xx} non-2xx, ${login.errors} errors`)

    log(`GET /api/v1/nodes: ${connections} connections for ${duration} s`)
    await cannon({ url: `${base}/api/v1/nodes`, headers: { authorization: `Bearer ${token}` }, connections, duration: 2 })
    const nodes = await cannon({ url: `${base}/api/v1/nodes`, headers: { authorization: `Bearer ${token}` }, connections, duration })
    if (nodes.non2xx > 0 || nodes.errors > 0) throw new Error(`nodes list failed: ${nodes.non2xx} non-2xx, ${nodes.errors} errors`)
    const body = (await coordinator.request('GET', '/api/v1/nodes', { token })).text

    log(`GET /api/v1/auth/me with ${issued.length} tokens in rotation`)
    const many = issued.length > 0 ? issued : [token]
    let i = 0
    const me = await cannon({
      url: `${base}/api/v1/auth/me`,
      connections,
      duration: Math.max(3, Math.round(duration / 2)),
      requests: [{ setupRequest: req => ({ ...req, headers: { ...req.headers, authorization: `Bearer ${many[i++ % many.length]}` } }) }]
    })
    const coordinatorRss = await rssMb(coordinator.child!.pid!)

    log('in-process verification rate')
    const verify = await verifyRate(false)
    const verifyCached = await verifyRate(true)
    return {
      scenario: 'coordinator',
      loginP99Ms: round(login.latency.p99),
      nodesListRps: Math.round(nodes.requests.average),
      authVerifyOpsPerSec: Math.round(verify),
      loginP50Ms: round(login.latency.p50),
      logins: login.requests.total,
      nodesListP99Ms: round(nodes.latency.p99),
      nodesListBytes: Buffer.byteLength(body),
      nodes: agents + 1,
      connections,
      durationSec: duration,
      authMeRps: Math.round(me.requests.average),
      authMeTokens: many.length,
      authVerifyCachedOpsPerSec: Math.round(verifyCached),
      coordinatorRssMb: round(coordinatorRss),
      load1: round((await readFile('/proc/loadavg', 'utf8')).split(' ').map(Number)[0]!)
    }
  } finally {
    await coordinator.stop()
    await cluster.close()
  }
}
