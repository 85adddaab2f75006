import { spawn, type ChildProcess } from 'node:child_process'
import { openSync, closeSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { RUNTIME_FILE, type RuntimeInfo } from '../../node/agent.ts'
import { initFleet } from '../../node/identity/fleet.ts'
import { readApiToken } from '../../node/identity/api-token.ts'
import { initNodeDir } from '../../node/identity/node-dir.ts'
import { freePort } from '../../node/cli/ports.ts'
import { Probe } from './netns.ts'
import type { Role } from '../../node/identity/certificate.ts'

export const CLI = new URL('../../bin/gatemesh.js', import.meta.url).pathname

export interface ClusterNode {
  name: string
  dir: string
  peerId: string
  p2pPort: number
  apiPort: number
  multiaddr: string
  api: string
  child?: ChildProcess
  /** set for nodes inside a test network namespace: their API is reached through a probe there */
  netns?: string
  probe?: Probe
}

export interface AddNodeOptions {
  role?: Role
  labels?: Record<string, string>
  /** Node names or multiaddrs to bootstrap from. @default the first node, if any */
  bootstrap?: string[]
  fleetDir?: string
  config?: Record<string, unknown>
  validDays?: number
  /** run inside this network namespace, listening on `address` */
  netns?: { ns: string, address: string }
}

export async function sleep (ms: number): Promise<void> {
  await new Promise(resolve => setTimeout(resolve, ms))
}

/** Poll `fn` until it returns a truthy value; fail with `what` after `timeoutMs`. */
export async function waitFor<T> (fn: () => Promise<T | undefined | null | false> | T | undefined | null | false, what: string, timeoutMs = 20_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let lastErr: unknown
  while (Date.now() < deadline) {
    try {
      const v = await fn()
      if (v) return v
    } catch (err) {
      lastErr = err
    }
    await sleep(everyMs)
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr == null ? '' : `: ${String((lastErr as Error).message ?? lastErr)}`}`)
}

/**
 * A fleet of real agent processes on 127.0.0.1 for integration tests and
 * benchmarks. Every node gets fixed ports so a restart comes back where its
 * peers expect it.
 */
export class Cluster {
  readonly root: string
  readonly fleetDir: string
  readonly nodes = new Map<string, ClusterNode>()
  /** extra arguments for `node`, e.g. a bundle instead of the CLI */
  readonly command: { exec: string, args: string[], env?: NodeJS.ProcessEnv }
  /** API tokens by node directory: written once by `initNodeDir`, read once */
  readonly #tokens = new Map<string, string>()

  private constructor (root: string, command?: Cluster['command']) {
    this.root = root
    this.fleetDir = join(root, 'fleet')
    this.command = command ?? { exec: process.execPath, args: [CLI] }
  }

  static async create (options: { command?: Cluster['command'] } = {}): Promise<Cluster> {
    const root = await mkdtemp(join(tmpdir(), 'gatemesh-test-'))
    const cluster = new Cluster(root, options.command)
    await initFleet(cluster.fleetDir)
    return cluster
  }

  node (name: string): ClusterNode {
    const n = this.nodes.get(name)
    if (n == null) throw new Error(`no node ${name}`)
    return n
  }

  async addNode (name: string, options: AddNodeOptions = {}): Promise<ClusterNode> {
    const p2pPort = options.netns == null ? await freePort() : 4001
    const apiPort = options.netns == null ? await freePort() : 7401
    const host = options.netns?.address ?? '127.0.0.1'
    const first = [...this.nodes.values()][0]
    const bootstrap = (options.bootstrap ?? (first == null ? [] : [first.name]))
      .map(b => b.startsWith('/') ? b : this.node(b).multiaddr)
    const dir = join(this.root, name)
    const { peerId } = await initNodeDir(dir, {
      fleetDir: options.fleetDir ?? this.fleetDir,
      role: options.role ?? 'gateway',
      labels: options.labels ?? {},
      listen: [`/ip4/${host}/tcp/${p2pPort}`],
      apiPort,
      bootstrap,
      config: { logs: { stdout: false, level: 'debug' }, ...options.config },
      ...(options.validDays == null ? {} : { validDays: options.validDays })
    })
    const node: ClusterNode = {
      name,
      dir,
      peerId,
      p2pPort,
      apiPort,
      multiaddr: `/ip4/${host}/tcp/${p2pPort}/p2p/${peerId}`,
      api: `http://127.0.0.1:${apiPort}`
    }
    if (options.netns != null) {
      node.netns = options.netns.ns
      node.probe = new Probe(options.netns.ns)
    }
    this.nodes.set(name, node)
    return node
  }

  /** Start a node's agent process and wait until its API answers. */
  async start (name: string, options: { wait?: boolean } = {}): Promise<ClusterNode> {
    const node = this.node(name)
    await rm(join(node.dir, RUNTIME_FILE), { force: true })
    const err = openSync(join(node.dir, 'stderr.log'), 'a')
    const argv = [...this.command.args, 'agent', '--data', node.dir]
    node.child = spawn(node.netns == null ? this.command.exec : 'ip', node.netns == null ? argv : ['netns', 'exec', node.netns, this.command.exec, ...argv], {
      stdio: ['ignore', 'ignore', err],
      env: { ...process.env, ...this.command.env }
    })
    closeSync(err)
    if (options.wait !== false) await this.waitReady(name)
    return node
  }

  async waitReady (name: string, timeoutMs = 30_000): Promise<RuntimeInfo> {
    const node = this.node(name)
    return await waitFor(async () => {
      if (node.child?.exitCode != null) throw new Error(`${name} exited with ${node.child.exitCode}: ${await this.stderr(name)}`)
      return JSON.parse(await readFile(join(node.dir, RUNTIME_FILE), 'utf8')) as RuntimeInfo
    }, `${name} to start`, timeoutMs)
  }

  async stderr (name: string): Promise<string> {
    return await readFile(join(this.node(name).dir, 'stderr.log'), 'utf8').catch(() => '')
  }

  /** kill -9 */
  kill (name: string): void {
    this.node(name).child?.kill('SIGKILL')
  }

  async stop (name: string): Promise<void> {
    const child = this.node(name).child
    if (child == null || child.exitCode != null || child.signalCode != null) return
    const exited = new Promise(resolve => child.once('exit', resolve))
    child.kill('SIGTERM')
    await Promise.race([exited, sleep(10_000)])
    if (child.exitCode == null && child.signalCode == null) child.kill('SIGKILL')
  }

  /** The node's local API token (its directory's api.token): what state-changing requests carry. */
  async token (name: string): Promise<string> {
    const dir = this.node(name).dir
    let token = this.#tokens.get(dir)
    if (token == null) this.#tokens.set(dir, token = await readApiToken(dir))
    return token
  }

  /** `authorization` header with the node's API token. */
  async auth (name: string): Promise<Record<string, string>> {
    return { authorization: `Bearer ${await this.token(name)}` }
  }

  async get<T = any> (name: string, path: string): Promise<T> {
    const probe = this.node(name).probe
    if (probe != null) {
      const reply = await probe.request('GET', this.node(name).api + path)
      if (reply.status >= 400) throw Object.assign(new Error(`GET ${path} on ${name}: ${reply.status} ${JSON.stringify(reply.body)}`), { status: reply.status, body: reply.body })
      return reply.body as T
    }
    const res = await fetch(this.node(name).api + path, { signal: AbortSignal.timeout(5000) })
    const body = await res.json()
    if (!res.ok) throw Object.assign(new Error(`GET ${path} on ${name}: ${res.status} ${JSON.stringify(body)}`), { status: res.status, body })
    return body as T
  }

  /** A request with the node's API token (`anonymous`: without, as any local process could). */
  async request<T = any> (name: string, method: string, path: string, body?: unknown, options: { anonymous?: boolean } = {}): Promise<{ status: number, body: T }> {
    const probe = this.node(name).probe
    const auth = options.anonymous === true ? {} : await this.auth(name)
    if (probe != null) return await probe.request(method, this.node(name).api + path, body, auth)
    const res = await fetch(this.node(name).api + path, {
      method,
      headers: { ...auth, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(5000)
    })
    return { status: res.status, body: await res.json() as T }
  }

  /** Members as `name` sees them, keyed by peer id. */
  async members (name: string): Promise<Map<string, { state: string, role?: string }>> {
    const status = await this.get<{ members: Array<{ peerId: string, state: string, role?: string }> }>(name, '/v1/status')
    return new Map(status.members.map(m => [m.peerId, m]))
  }

  running (): ClusterNode[] {
    return [...this.nodes.values()].filter(n => n.child != null && n.child.exitCode == null && n.child.signalCode == null)
  }

  async close (): Promise<void> {
    await Promise.all([...this.nodes.keys()].map(async n => { await this.stop(n) }))
    for (const n of this.nodes.values()) n.probe?.close()
    if (process.env.GATEMESH_KEEP_TEST_DIRS == null) await rm(this.root, { recursive: true, force: true })
  }
}
