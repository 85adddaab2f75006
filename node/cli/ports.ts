import { readFileSync } from 'node:fs'
import { createServer } from 'node:net'

/** Lowest ephemeral port the kernel hands out for outgoing connections. */
function ephemeralLow (): number {
  try {
    const [low] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number)
    if (low != null && low > 2048) return low
  } catch {}
  return 32768
}

async function tryBind (port: number, host: string): Promise<boolean> {
  return await new Promise(resolve => {
    const server = createServer()
    server.unref()
    server.once('error', () => { resolve(false) })
    server.listen(port, host, () => { server.close(() => { resolve(true) }) })
  })
}

/**
 * A TCP port that was free a moment ago on `host`. It is picked below the
 * kernel's ephemeral range: a port from `listen(0)` can be handed out again
 * as the source port of some outgoing connection before our process binds it.
 */
export async function freePort (host = '127.0.0.1'): Promise<number> {
  const high = ephemeralLow() - 1
  const low = Math.min(20_000, high - 1000)
  for (let i = 0; i < 200; i++) {
    const port = low + Math.floor(Math.random() * (high - low))
    if (await tryBind(port, host)) return port
  }
  throw new Error(`no free port between ${low} and ${high} on ${host}`)
}
