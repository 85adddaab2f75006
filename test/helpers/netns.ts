import type { ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { forgetNetns, run, start, watchNetns, type TestProcess } from './processes.ts'

const ip = async (...args: string[]): Promise<void> => { await run('ip', args, { timeoutMs: 30_000 }) }
const PROBE = new URL('./probe.ts', import.meta.url).pathname

/** HTTP into a namespace: a small relay process living inside it. */
export class Probe {
  readonly #process: TestProcess
  readonly #child: ChildProcess
  readonly #pending = new Map<number, (reply: { status: number, body: any } | { error: string }) => void>()
  #next = 0

  constructor (ns: string) {
    this.#process = start('ip', ['netns', 'exec', ns, process.execPath, PROBE], { name: `probe in ${ns}`, stdio: ['pipe', 'pipe', 'inherit'] })
    this.#child = this.#process.child
    createInterface({ input: this.#child.stdout! }).on('line', line => {
      const reply = JSON.parse(line)
      this.#pending.get(reply.id)?.(reply)
      this.#pending.delete(reply.id)
    })
  }

  async request (method: string, url: string, body?: unknown, headers?: Record<string, string>): Promise<{ status: number, body: any }> {
    const id = this.#next++
    const reply = await new Promise<{ status: number, body: any } | { error: string }>((resolve, reject) => {
      const timer = setTimeout(() => { this.#pending.delete(id); reject(new Error(`probe: ${method} ${url} timed out`)) }, 10_000)
      this.#pending.set(id, r => { clearTimeout(timer); resolve(r) })
      this.#child.stdin!.write(JSON.stringify({ id, method, url, body, headers }) + '\n')
    })
    if ('error' in reply) throw new Error(`probe: ${method} ${url}: ${reply.error}`)
    return reply
  }

  close (): void {
    this.#process.kill()
  }
}

/**
 * A small network of test hosts: one namespace per host, each with a veth
 * into a switch namespace holding two bridges. Hosts start on bridge A;
 * `split` moves some to bridge B, cutting them off from the rest while they
 * still reach each other; `heal` moves them back. Every address lives in
 * namespaces this class creates, and `destroy` removes them all.
 */
export class NetLab {
  readonly prefix: string
  readonly hosts: string[]
  readonly subnet: string

  private constructor (prefix: string, count: number, subnet: string) {
    this.prefix = prefix
    this.subnet = subnet
    this.hosts = Array.from({ length: count }, (_, i) => `${prefix}-h${i + 1}`)
  }

  /** Can this machine create network namespaces? (root and iproute2) */
  static async available (): Promise<{ ok: boolean, reason?: string }> {
    const name = `gmprobe-${process.pid}`
    try {
      watchNetns(name)
      await ip('netns', 'add', name)
      await ip('netns', 'del', name)
      forgetNetns(name)
      return { ok: true }
    } catch (err: any) {
      return { ok: false, reason: String(err.stderr ?? err.message).trim() }
    }
  }

  static async create (count: number): Promise<NetLab> {
    const lab = new NetLab(`gm${process.pid % 100000}`, count, `10.${200 + (process.pid % 50)}.0`)
    const sw = lab.switch
    for (const ns of [...lab.hosts, sw]) watchNetns(ns)
    await ip('netns', 'add', sw)
    await ip('-n', sw, 'link', 'set', 'lo', 'up')
    for (const br of ['bra', 'brb']) {
      await ip('-n', sw, 'link', 'add', br, 'type', 'bridge')
      await ip('-n', sw, 'link', 'set', br, 'up')
    }
    for (const [i, host] of lab.hosts.entries()) {
      await ip('netns', 'add', host)
      await ip('-n', host, 'link', 'set', 'lo', 'up')
      await ip('-n', host, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', `p${i + 1}`, 'netns', sw)
      await ip('-n', host, 'addr', 'add', `${lab.address(i)}/24`, 'dev', 'eth0')
      await ip('-n', host, 'link', 'set', 'eth0', 'up')
      await ip('-n', sw, 'link', 'set', `p${i + 1}`, 'master', 'bra')
      await ip('-n', sw, 'link', 'set', `p${i + 1}`, 'up')
    }
    return lab
  }

  get switch (): string {
    return `${this.prefix}-sw`
  }

  address (index: number): string {
    return `${this.subnet}.${index + 1}`
  }

  /** Move these hosts (by index) onto the other bridge. */
  async split (indexes: number[]): Promise<void> {
    for (const i of indexes) await ip('-n', this.switch, 'link', 'set', `p${i + 1}`, 'master', 'brb')
  }

  async heal (): Promise<void> {
    for (let i = 0; i < this.hosts.length; i++) await ip('-n', this.switch, 'link', 'set', `p${i + 1}`, 'master', 'bra')
  }

  async destroy (): Promise<void> {
    for (const ns of [...this.hosts, this.switch]) {
      await ip('netns', 'del', ns).catch(() => {})
      forgetNetns(ns)
    }
  }
}
