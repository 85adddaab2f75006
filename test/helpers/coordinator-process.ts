import type { ChildProcess } from 'node:child_process'
import { request as httpsRequest } from 'node:https'
import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { freePort } from './ports.ts'
import type { AppCommand } from './app-bundle.ts'
import { budget, calibrate, startBudget } from './budget.ts'
import { SOURCES_COMMAND } from './cluster.ts'
import { run, start, type TestProcess } from './processes.ts'
import type { CoordinatorRuntime } from '../../coordinator/coordinator.ts'

export interface CoordinatorProcessInit {
  dataDir: string
  fleetDir: string
  bootstrap?: string[]
  tls?: { cert: string, key: string }
  /** How long a start may take before it counts as failed, at least (stretched by `startBudget`). @default 60_000 */
  startTimeoutMs?: number
  /**
   * How to start the CLI: `exec ...args coordinator ...`. The coordinator
   * ships as the npm package and runs from its sources (the app bundle is
   * the agent's: @fastify/swagger-ui finds its files through __dirname,
   * which a bundle cannot keep).
   * @default SOURCES_COMMAND (cluster.ts)
   */
  command?: AppCommand
}

/**
 * `gatemesh coordinator` as a child process on 127.0.0.1 with fixed ports
 * (kept across restarts), its stdout captured for the first admin's
 * password. It is started through test/helpers/processes.ts, so it never
 * outlives the test; its start gets max(60 s, 10 × the first agent's
 * start) (test/helpers/budget.ts).
 */
export class CoordinatorProcess {
  readonly init: CoordinatorProcessInit
  httpPort = 0
  p2pPort = 0
  child?: ChildProcess
  process?: TestProcess
  stdout = ''
  runtime?: CoordinatorRuntime
  /** the CA to trust for HTTPS */
  ca?: Buffer

  constructor (init: CoordinatorProcessInit) {
    this.init = init
  }

  get url (): string {
    return `${this.init.tls == null ? 'http' : 'https'}://127.0.0.1:${this.httpPort}`
  }

  get multiaddr (): string {
    return `/ip4/127.0.0.1/tcp/${this.p2pPort}/p2p/${this.runtime?.peerId ?? ''}`
  }

  async #command (): Promise<AppCommand> {
    return this.init.command ?? SOURCES_COMMAND
  }

  /** `gatemesh user add` (the coordinator stopped), the password on stdin. */
  async addUser (username: string, password: string, roles: { admin: true } | { role: string }): Promise<void> {
    const roleArgs = 'admin' in roles ? ['--admin'] : ['--role', roles.role]
    const command = await this.#command()
    // often the first process a test starts, before any start has set the pace: measure the machine first
    await calibrate()
    await run(command.exec, [...command.args, 'user', 'add', ...roleArgs, '--data', this.init.dataDir, '--username', username, '--password-stdin'], {
      input: `${password}\n`,
      timeoutMs: budget(60_000),
      ...(command.env == null ? {} : { env: command.env })
    })
  }

  async start (tls?: { cert: string, key: string }): Promise<CoordinatorRuntime> {
    if (this.httpPort === 0) this.httpPort = await freePort()
    if (this.p2pPort === 0) this.p2pPort = await freePort()
    if (tls != null) this.init.tls = tls
    await rm(join(this.init.dataDir, 'coordinator.json'), { force: true })
    const command = await this.#command()
    const args = [...command.args, 'coordinator', '--data', this.init.dataDir, '--fleet', this.init.fleetDir, '--host', '127.0.0.1', '--port', String(this.httpPort), '--p2p-listen', `/ip4/127.0.0.1/tcp/${this.p2pPort}`]
    for (const b of this.init.bootstrap ?? []) args.push('--bootstrap', b)
    if (this.init.tls != null) {
      args.push('--tls-cert', this.init.tls.cert, '--tls-key', this.init.tls.key)
      this.ca = await readFile(this.init.tls.cert)
    }
    this.stdout = ''
    const p = start(command.exec, args, { name: 'coordinator', stdio: ['ignore', 'pipe', 'pipe'], ...(command.env == null ? {} : { env: command.env }) })
    this.process = p
    const child = this.child = p.child
    child.stdout!.setEncoding('utf8').on('data', (d: string) => { this.stdout += d })
    let stderr = ''
    child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d })
    const deadline = Date.now() + startBudget(this.init.startTimeoutMs ?? 60_000)
    let lastErr: unknown
    while (Date.now() < deadline) {
      if (p.exit != null) throw new Error(`coordinator exited with ${p.exit.signal ?? String(p.exit.code)}: ${stderr}`)
      try {
        const runtime = JSON.parse(await readFile(join(this.init.dataDir, 'coordinator.json'), 'utf8')) as CoordinatorRuntime
        // the CLI prints the first admin's password (if any) after coordinator.json is written, then
        // its "listening on" line: once that line is read, printedPassword() has its answer
        if (/^gatemesh coordinator \S+ listening on /m.test(this.stdout)) {
          this.runtime = runtime
          return runtime
        }
        lastErr = new Error('coordinator.json is written, but the "listening on" line not yet read')
      } catch (err) {
        lastErr = err
      }
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    await p.stop()
    throw new Error(`timed out waiting for the coordinator to start: ${String((lastErr as Error | undefined)?.message)}\n${stderr}`)
  }

  /** The first admin's password, printed once on the first start. */
  printedPassword (): string | undefined {
    return /created the first user "admin" with password\s+(\S+)/.exec(this.stdout)?.[1]
  }

  /** SIGTERM, then SIGKILL if it has not exited after 15 s (stretched on a slow machine). */
  async stop (): Promise<void> {
    await this.process?.stop(budget(15_000))
  }

  /** JSON over HTTP(S), trusting this coordinator's self-signed certificate. */
  async request<T = any> (method: string, path: string, options: { token?: string, body?: unknown } = {}): Promise<{ status: number, body: T, text: string }> {
    const headers: Record<string, string> = {}
    if (options.token != null) headers.authorization = `Bearer ${options.token}`
    const payload = options.body === undefined ? undefined : JSON.stringify(options.body)
    if (payload != null) headers['content-type'] = 'application/json'
    if (this.init.tls == null) {
      const res = await fetch(this.url + path, { method, headers, body: payload, signal: AbortSignal.timeout(30_000) })
      const text = await res.text()
      return { status: res.status, body: safeJson(text), text }
    }
    return await new Promise((resolve, reject) => {
      const req = httpsRequest(this.url + path, { method, headers, ...(this.ca == null ? {} : { ca: this.ca }), timeout: 30_000 }, res => {
        let text = ''
        res.setEncoding('utf8').on('data', d => { text += d }).on('end', () => { resolve({ status: res.statusCode ?? 0, body: safeJson(text), text }) })
      })
      req.on('error', reject)
      req.end(payload)
    })
  }

  async login (username: string, password: string): Promise<string> {
    const res = await this.request('POST', '/api/v1/auth/login', { body: { username, password } })
    if (res.status !== 200) throw new Error(`login failed: ${res.status} ${res.text}`)
    return res.body.token
  }
}

function safeJson (text: string): any {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}
