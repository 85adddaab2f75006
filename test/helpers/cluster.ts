import type { ChildProcess } from 'node:child_process'
import { openSync, closeSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { RUNTIME_FILE, type RuntimeInfo } from '../../node/agent.ts'
import { initFleet } from '../../node/identity/fleet.ts'
import { readApiToken } from '../../node/identity/api-token.ts'
import { initNodeDir } from '../../node/identity/node-dir.ts'
import { freePort } from './ports.ts'
import { bundleCommand, type AppCommand } from './app-bundle.ts'
import { budget, noteStart, startBudget } from './budget.ts'
import { Probe } from './netns.ts'
import { start as startProcess, type TestProcess } from './processes.ts'
import type { Role } from '../../node/identity/certificate.ts'

export const CLI = new URL('../../bin/gatemesh.js', import.meta.url).pathname
/** The CLI from its TypeScript sources, for tests about running from sources. */
export const SOURCES_COMMAND: AppCommand = { exec: process.execPath, args: [CLI] }

export interface ClusterNode {
  name: string
  dir: string
  peerId: string
  p2pPort: number
  apiPort: number
  multiaddr: string
  api: string
  child?: ChildProcess
  /** the agent process (its `child` is `child`), started through test/helpers/processes.ts */
  process?: TestProcess
  /** when the last start began (performance.now()) */
  startedAt?: number
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

/**
 * Poll `fn` until it returns a truthy value; fail with `what` after
 * `timeoutMs`, a figure for an idle machine that is stretched by how slow
 * this one measured (test/helpers/budget.ts).
 */
export async function waitFor<T> (fn: () => Promise<T | undefined | null | false> | T | undefined | null | false, what: string, timeoutMs = 20_000, everyMs = 100): Promise<T> {
  timeoutMs = budget(timeoutMs)
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

export interface ClusterInit {
  /** how to start an agent: `exec ...args agent --data DIR`. @default the app bundle (test/helpers/app-bundle.ts) */
  command?: AppCommand
  /** run agents from the TypeScript sources (`SOURCES_COMMAND`) instead of the bundle */
  sources?: boolean
}

/**
 * A fleet of real agent processes on 127.0.0.1 for integration tests and
 * benchmarks. Every node gets fixed ports so a restart comes back where its
 * peers expect it. Agents run from the app bundle, as shipped, unless told
 * otherwise; every process goes through test/helpers/processes.ts, so none
 * outlives the test.
 */
export class Cluster {
  readonly root: string
  readonly fleetDir: string
  readonly nodes = new Map<string, ClusterNode>()
  /** how an agent is started: `exec ...args agent --data DIR` */
  readonly command: AppCommand
  /** API tokens by node directory: written once by `initNodeDir`, read once */
  readonly #tokens = new Map<string, string>()

  private constructor (root: string, command: AppCommand) {
    this.root = root
    this.fleetDir = join(root, 'fleet')
    this.command = command
  }

  static async create (options: ClusterInit = {}): Promise<Cluster> {
    const command = options.command ?? (options.sources === true ? SOURCES_COMMAND : await bundleCommand())
    const root = await mkdtemp(join(tmpdir(), 'gatemesh-test-'))
    const cluster = new Cluster(root, command)
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
    try {
      node.startedAt = performance.now()
      node.process = startProcess(node.netns == null ? this.command.exec : 'ip', node.netns == null ? argv : ['netns', 'exec', node.netns, this.command.exec, ...argv], {
        name: `agent ${name}`,
        stdio: ['ignore', 'ignore', err],
        ...(this.command.env == null ? {} : { env: this.command.env })
      })
      node.child = node.process.child
    } finally {
      closeSync(err)
    }
    if (options.wait !== false) await this.waitReady(name)
    return node
  }

  /**
   * Wait for an agent's runtime file. The first start in this process sets
   * the pace for every later wait (test/helpers/budget.ts); the default
   * budget is max(30 s, 10 × that first start).
   */
  async waitReady (name: string, timeoutMs = startBudget()): Promise<RuntimeInfo> {
    const node = this.node(name)
    const deadline = Date.now() + timeoutMs
    let lastErr: unknown
    while (Date.now() < deadline) {
      const exit = node.process?.exit
      if (exit != null) throw new Error(`${name} exited with ${exit.signal ?? String(exit.code)}: ${await this.stderr(name)}`)
      try {
        const info = JSON.parse(await readFile(join(node.dir, RUNTIME_FILE), 'utf8')) as RuntimeInfo
        if (node.startedAt != null) noteStart(performance.now() - node.startedAt)
        return info
      } catch (err) {
        lastErr = err
      }
      await sleep(100)
    }
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${name} to start: ${String((lastErr as Error | undefined)?.message)}\n${await this.stderr(name)}`)
  }

  async stderr (name: string): Promise<string> {
    return await readFile(join(this.node(name).dir, 'stderr.log'), 'utf8').catch(() => '')
  }

  /** kill -9 (the agent's whole process group: what it started dies with it) */
  kill (name: string): void {
    this.node(name).process?.kill()
  }

  /** SIGTERM, then SIGKILL if it has not exited after `graceMs` (stretched on a slow machine). */
  async stop (name: string, graceMs = 10_000): Promise<void> {
    await this.node(name).process?.stop(budget(graceMs))
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
    return [...this.nodes.values()].filter(n => n.process?.running === true)
  }

  async close (): Promise<void> {
    await Promise.all([...this.nodes.keys()].map(async n => { await this.stop(n) }))
    for (const n of this.nodes.values()) n.probe?.close()
    if (process.env.GATEMESH_KEEP_TEST_DIRS == null) await rm(this.root, { recursive: true, force: true })
  }
}
