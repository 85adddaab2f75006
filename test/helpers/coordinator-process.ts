import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { request as httpsRequest } from 'node:https'
import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { freePort } from '../../node/cli/ports.ts'
import { CLI, sleep, waitFor } from './cluster.ts'
import type { CoordinatorRuntime } from '../../coordinator/coordinator.ts'

export interface CoordinatorProcessInit {
  dataDir: string
  fleetDir: string
  bootstrap?: string[]
  tls?: { cert: string, key: string }
  /** How long a start may take before it counts as failed. @default 60_000 */
  startTimeoutMs?: number
}

/**
 * `gatemesh coordinator` as a child process on 127.0.0.1 with fixed ports
 * (kept across restarts), its stdout captured for the first admin's
 * password.
 */
export class CoordinatorProcess {
  readonly init: CoordinatorProcessInit
  httpPort = 0
  p2pPort = 0
  child?: ChildProcess
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

  /** `gatemesh user add` (the coordinator stopped), the password on stdin. */
  async addUser (username: string, password: string, roles: { admin: true } | { role: string }): Promise<void> {
    const roleArgs = 'admin' in roles ? ['--admin'] : ['--role', roles.role]
    await new Promise<void>((resolve, reject) => {
      const child = execFile(process.execPath, [CLI, 'user', 'add', ...roleArgs, '--data', this.init.dataDir, '--username', username, '--password-stdin'], err => { err == null ? resolve() : reject(err) })
      child.stdin!.end(`${password}\n`)
    })
  }

  async start (tls?: { cert: string, key: string }): Promise<CoordinatorRuntime> {
    if (this.httpPort === 0) this.httpPort = await freePort()
    if (this.p2pPort === 0) this.p2pPort = await freePort()
    if (tls != null) this.init.tls = tls
    await rm(join(this.init.dataDir, 'coordinator.json'), { force: true })
    const args = [CLI, 'coordinator', '--data', this.init.dataDir, '--fleet', this.init.fleetDir, '--host', '127.0.0.1', '--port', String(this.httpPort), '--p2p-listen', `/ip4/127.0.0.1/tcp/${this.p2pPort}`]
    for (const b of this.init.bootstrap ?? []) args.push('--bootstrap', b)
    if (this.init.tls != null) {
      args.push('--tls-cert', this.init.tls.cert, '--tls-key', this.init.tls.key)
      this.ca = await readFile(this.init.tls.cert)
    }
    this.stdout = ''
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    this.child = child
    child.stdout.setEncoding('utf8').on('data', (d: string) => { this.stdout += d })
    let stderr = ''
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d })
    this.runtime = await waitFor(async () => {
      if (child.exitCode != null) throw new Error(`coordinator exited with ${child.exitCode}: ${stderr}`)
      return JSON.parse(await readFile(join(this.init.dataDir, 'coordinator.json'), 'utf8')) as CoordinatorRuntime
    }, 'the coordinator to start', this.init.startTimeoutMs ?? 60_000)
    return this.runtime
  }

  /** The first admin's password, printed once on the first start. */
  printedPassword (): string | undefined {
    return /created the first user "admin" with password\s+(\S+)/.exec(this.stdout)?.[1]
  }

  async stop (): Promise<void> {
    const child = this.child
    if (child == null || child.exitCode != null || child.signalCode != null) return
    const exited = new Promise(resolve => child.once('exit', resolve))
    child.kill('SIGTERM')
    await Promise.race([exited, sleep(15_000)])
    if (child.exitCode == null && child.signalCode == null) child.kill('SIGKILL')
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
