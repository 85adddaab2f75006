import { execFile } from 'node:child_process'
import { readdir, readFile, readlink } from 'node:fs/promises'
import { promisify } from 'node:util'

const run = promisify(execFile)

/** Resident set size of a process, in MB (VmRSS). */
export async function rssMb (pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  return Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? NaN) / 1024
}

async function socketInodes (pid: number): Promise<Set<string>> {
  const out = new Set<string>()
  const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])
  await Promise.all(fds.map(async fd => {
    const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')
    const m = /^socket:\[(\d+)\]$/.exec(target)
    if (m != null) out.add(m[1]!)
  }))
  return out
}

interface SocketBytes { sent: number, received: number }

/**
 * Bytes each watched process moved over TCP, from the kernel's per-socket
 * counters (`ss -tie`: bytes_acked out, bytes_received in), sampled every
 * `everyMs`. A socket is attributed to the process holding it; sockets on
 * `excludePorts` (the agent's HTTP API, which the bench itself polls) are
 * left out. Bytes a socket moved after the last sample before it closed are
 * missed, so the figures are lower bounds (by little: connections here
 * live for seconds, samples are 250 ms apart).
 */
export class SocketMeter {
  readonly #pids: number[]
  readonly #exclude: Set<number>
  /** per pid: socket key → last counters seen */
  readonly #seen = new Map<number, Map<string, SocketBytes>>()
  /** per pid: counters at `reset()` of the sockets open then */
  #base = new Map<number, Map<string, SocketBytes>>()
  #timer?: NodeJS.Timeout
  #sampling?: Promise<void>

  constructor (pids: number[], excludePorts: number[] = []) {
    this.#pids = pids
    this.#exclude = new Set(excludePorts)
    for (const pid of pids) this.#seen.set(pid, new Map())
  }

  start (everyMs = 250): void {
    const loop = (): void => {
      this.#sampling = this.sample().catch(() => {})
      this.#timer = setTimeout(loop, everyMs)
    }
    loop()
  }

  async stop (): Promise<void> {
    clearTimeout(this.#timer)
    await this.#sampling
  }

  async sample (): Promise<void> {
    const owners = new Map<string, number>()
    for (const pid of this.#pids) for (const ino of await socketInodes(pid)) owners.set(ino, pid)
    const { stdout } = await run('ss', ['-tieHn'], { maxBuffer: 64 * 1024 * 1024 })
    const lines = stdout.split('\n')
    for (let i = 0; i < lines.length; i++) {
      const head = lines[i]!
      if (head.startsWith('\t') || head.startsWith(' ')) continue
      const ino = /\bino:(\d+)/.exec(head)?.[1]
      const info = lines[i + 1]?.startsWith('\t') === true ? lines[i + 1]! : ''
      const pid = ino == null ? undefined : owners.get(ino)
      if (pid == null) continue
      const [, , , local = '', peer = ''] = head.trim().split(/\s+/)
      const port = (addr: string): number => Number(addr.slice(addr.lastIndexOf(':') + 1))
      if (this.#exclude.has(port(local)) || this.#exclude.has(port(peer))) continue
      const num = (name: string): number => Number(new RegExp(`\\b${name}:(\\d+)`).exec(info)?.[1] ?? 0)
      this.#seen.get(pid)!.set(`${ino} ${local} ${peer}`, { sent: num('bytes_acked'), received: num('bytes_received') })
    }
  }

  /** Start counting from now: sockets open now count from their current counters. */
  async reset (): Promise<void> {
    await this.sample()
    this.#base = new Map([...this.#seen].map(([pid, m]) => [pid, new Map(m)]))
  }

  /** Bytes per pid since `reset()`. */
  totals (): Map<number, SocketBytes> {
    const out = new Map<number, SocketBytes>()
    for (const [pid, sockets] of this.#seen) {
      const base = this.#base.get(pid) ?? new Map()
      let sent = 0
      let received = 0
      for (const [key, b] of sockets) {
        const b0 = base.get(key)
        sent += b.sent - (b0?.sent ?? 0)
        received += b.received - (b0?.received ?? 0)
      }
      out.set(pid, { sent, received })
    }
    return out
  }
}
