import { connect, createServer, isIP, type Server, type Socket } from 'node:net'
import { chmod } from 'node:fs/promises'
import { join } from 'node:path'
import { isLoopbackAddress } from '../../config/loopback.ts'
import type { Logger } from 'pino'

/**
 * Network for action scripts. A sandboxed script lives in a network
 * namespace of its own with only a loopback interface: nothing outside is
 * reachable. For each destination its bundle's config.json declares
 * (`host:port`), the script's own process listens at that address inside
 * the namespace — a name from the declaration resolves there through the
 * namespace's /etc/hosts — and relays each connection over a Unix socket to
 * the agent, which connects to the declared destination and nowhere else.
 * TCP only; no DNS, no UDP.
 */

/** One declared destination. */
export interface Destination {
  /** as declared: a host name or an IP address */
  host: string
  port: number
  /** where the script finds it inside its namespace */
  local: string
}

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/

/** `host:port` or `[v6]:port` → parts, or an error message naming what is wrong. */
export function parseDestination (text: string): { host: string, port: number } | string {
  const m = /^\[([0-9A-Fa-f:.]+)\]:(\d{1,5})$/.exec(text) ?? /^([^:[\]]+):(\d{1,5})$/.exec(text)
  if (m == null) return `"${text}" is not host:port (IPv6 as [address]:port)`
  const host = m[1]!.toLowerCase()
  const port = Number(m[2])
  if (port < 1 || port > 65535) return `"${text}": port must be 1-65535`
  if (isIP(host) === 0 && !HOSTNAME.test(host)) return `"${text}": "${host}" is not a host name or IP address`
  if (text.startsWith('[') && isIP(host) !== 6) return `"${text}": brackets are for IPv6 addresses`
  return { host, port }
}

/**
 * Where each declared destination lives inside the namespace: IP literals
 * at themselves (added to the namespace's loopback), names at 127.0.0.2,
 * 127.0.0.3, … through /etc/hosts, `localhost` at 127.0.0.1.
 */
export function layOut (declared: readonly string[]): { destinations: Destination[], addresses: string[], hosts: string } {
  const names = new Map<string, string>([['localhost', '127.0.0.1']])
  const addresses = new Set<string>()
  const destinations: Destination[] = []
  const seen = new Set<string>()
  for (const text of declared) {
    const parsed = parseDestination(text)
    if (typeof parsed === 'string') throw new Error(parsed)
    const key = `${parsed.host}|${parsed.port}`
    if (seen.has(key)) continue
    seen.add(key)
    let local: string
    if (isIP(parsed.host) !== 0) {
      local = parsed.host
      if (!isLoopbackAddress(local) || local === '::1') addresses.add(local)
    } else {
      let assigned = names.get(parsed.host)
      if (assigned == null) {
        assigned = `127.0.0.${names.size + 1}`
        names.set(parsed.host, assigned)
        addresses.add(assigned)
      }
      local = assigned
    }
    destinations.push({ ...parsed, local })
  }
  const hosts = ['127.0.0.1 localhost', '::1 localhost ip6-localhost']
  for (const [name, address] of names) if (name !== 'localhost') hosts.push(`${address} ${name}`)
  // 127.0.0.0/8 is on lo already; only other addresses need adding
  return { destinations, addresses: [...addresses].filter(a => !(isIP(a) === 4 && a.startsWith('127.'))), hosts: hosts.join('\n') + '\n' }
}

/** The socket for destination `i` in the run's `net` directory. */
export function socketName (i: number): string {
  return `${i}.sock`
}

/**
 * Source of the module every sandboxed script loads first (`--import
 * data:`): a listener per destination inside the namespace, relaying to
 * the agent's socket. Unref'd, so a script that is done exits.
 */
export function relaySource (destinations: readonly Destination[], socketDir: string): string {
  const table = destinations.map((d, i) => ({ host: d.local, port: d.port, path: join(socketDir, socketName(i)) }))
  return `import net from 'node:net'
for (const d of ${JSON.stringify(table)}) {
  const server = net.createServer(client => {
    const upstream = net.connect(d.path)
    client.pipe(upstream).pipe(client)
    const end = () => { client.destroy(); upstream.destroy() }
    client.on('error', end); upstream.on('error', end); client.on('close', end); upstream.on('close', end)
  })
  server.on('error', err => { process.emitWarning('gatemesh sandbox: cannot listen for ' + d.host + ':' + d.port + ': ' + err.message) })
  server.listen(d.port, d.host)
  server.unref()
}
`
}

export interface NetProxyInit {
  /** the agent's own API (host, port): no declaration reaches it through the proxy */
  ownApi?: { port: number }
  /** connections open at once per run. @default 32 */
  maxConnections?: number
  /** @default 10000 */
  connectTimeoutMs?: number
}

/**
 * The agent's half: a Unix socket per declared destination in the run's
 * directory; each connection on it becomes one TCP connection to exactly
 * that destination.
 */
export class NetProxy {
  readonly #servers: Server[] = []
  readonly #sockets = new Set<Socket>()
  readonly #log: Pick<Logger, 'info' | 'warn'>
  readonly #init: NetProxyInit
  readonly #script: string

  constructor (script: string, log: Pick<Logger, 'info' | 'warn'>, init: NetProxyInit = {}) {
    this.#script = script
    this.#log = log
    this.#init = init
  }

  async listen (destinations: readonly Destination[], socketDir: string): Promise<void> {
    const max = this.#init.maxConnections ?? 32
    for (const [i, d] of destinations.entries()) {
      const server = createServer(client => {
        if (this.#sockets.size >= max) {
          client.destroy()
          return
        }
        this.#sockets.add(client)
        const upstream = connect({ host: d.host, port: d.port, timeout: this.#init.connectTimeoutMs ?? 10_000 })
        this.#sockets.add(upstream)
        upstream.once('connect', () => {
          upstream.setTimeout(0)
          // a declaration must not be a way back into the agent's own API
          const own = this.#init.ownApi
          if (own != null && upstream.remotePort === own.port && isLoopbackAddress(upstream.remoteAddress ?? '')) {
            this.#log.warn({ script: this.#script, destination: `${d.host}:${d.port}` }, 'script connection refused: the agent\'s own API')
            upstream.destroy()
            client.destroy()
            return
          }
          this.#log.info({ script: this.#script, destination: `${d.host}:${d.port}`, address: upstream.remoteAddress }, 'script connection')
          client.pipe(upstream).pipe(client)
        })
        const end = (): void => {
          client.destroy()
          upstream.destroy()
          this.#sockets.delete(client)
          this.#sockets.delete(upstream)
        }
        upstream.once('timeout', end)
        for (const s of [client, upstream]) {
          s.once('error', end)
          s.once('close', end)
        }
      })
      const path = join(socketDir, socketName(i))
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen(path, () => { server.off('error', reject); resolve() })
      })
      // the script may run as another user: it must be able to connect
      await chmod(path, 0o666)
      this.#servers.push(server)
    }
  }

  async close (): Promise<void> {
    for (const s of this.#sockets) s.destroy()
    this.#sockets.clear()
    await Promise.all(this.#servers.map(async s => { await new Promise(resolve => s.close(resolve)) }))
  }
}
