/**
 * A cluster of real HashiCorp Serf agents (Debian's `serf`: memberlist's
 * SWIM + Lifeguard inside), one per network namespace of a NetLab, with
 * gossip encryption on, as a baseline for gatemesh's membership.
 *
 * What each agent sees comes from its log on stdout, timed as it arrives:
 * the agent logs `EventMemberJoin: <name>` and `EventMemberFailed: <name>`
 * the moment memberlist tells Serf, before Serf's event coalescing (which
 * holds member events for event handlers up to seconds), and Go's log
 * timestamps have only whole seconds.
 */
import { randomBytes } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { run, start, type TestProcess } from '../helpers/processes.ts'
import type { NetLab } from '../helpers/netns.ts'

const GOSSIP_PORT = 7946

/** `serf`'s version, installing Debian's package when it is missing and we may (root with apt-get); otherwise says how. */
export async function ensureSerf (log: (msg: string) => void): Promise<string> {
  // Debian's build reports an old version string (0.9.4~ds1 says 0.8.2-dev): the package's version is the one to print
  const version = async (): Promise<string> => {
    const binary = (await run('serf', ['version'], { timeoutMs: 30_000 })).stdout.split('\n')[0]!.trim()
    const pkg = await run('dpkg-query', ['-W', '-f', '${Version}', 'serf'], { timeoutMs: 30_000 }).then(r => r.stdout.trim(), () => '')
    return pkg === '' ? binary : `${pkg} (${binary})`
  }
  try {
    return await version()
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  if (process.getuid?.() !== 0) throw new Error('serf is not installed: install Debian\'s package (sudo apt-get install -y serf) and run again')
  log('serf is not installed: apt-get install -y serf')
  const env = { DEBIAN_FRONTEND: 'noninteractive' }
  try {
    await run('apt-get', ['install', '-y', '--no-install-recommends', 'serf'], { timeoutMs: 600_000, env })
  } catch {
    await run('apt-get', ['update'], { timeoutMs: 600_000, env })
    await run('apt-get', ['install', '-y', '--no-install-recommends', 'serf'], { timeoutMs: 600_000, env })
  }
  return await version()
}

export interface SerfMember {
  name: string
  address: string
  dir: string
  process: TestProcess
  /** member name → when this agent logged it joined (performance.now()) */
  joined: Map<string, number>
  /** member name → when this agent logged it failed (performance.now()) */
  failed: Map<string, number>
}

export class SerfCluster {
  readonly members: SerfMember[] = []
  readonly #lab: NetLab
  readonly #root: string
  readonly #key = randomBytes(32).toString('base64')

  constructor (lab: NetLab, root: string) {
    this.#lab = lab
    this.#root = root
  }

  /** Start `count` agents (host i of the lab runs `s<i>`), the first alone, the rest joining it; waits for each agent's own join. */
  async start (count: number): Promise<void> {
    await this.#startOne(0, [])
    await this.#waitFor(() => this.members[0]!.joined.has('s0'), 's0 to start', 30_000)
    const first = `${this.#lab.address(0)}:${GOSSIP_PORT}`
    for (let i = 1; i < count; i++) await this.#startOne(i, [first])
  }

  async #startOne (i: number, joinTo: string[]): Promise<void> {
    const name = `s${i}`
    const address = this.#lab.address(i)
    const dir = join(this.#root, name)
    await mkdir(dir, { recursive: true })
    // the key goes in a 0600 file rather than on the command line, where any local user could read it
    const config = join(dir, 'serf.json')
    await writeFile(config, JSON.stringify({ encrypt_key: this.#key }), { mode: 0o600 })
    const args = ['netns', 'exec', this.#lab.hosts[i]!, 'serf', 'agent', `-node=${name}`, `-bind=${address}:${GOSSIP_PORT}`,
      // RPC on the namespace's own loopback: nothing the bench uses, and it must not reach the link
      '-rpc-addr=127.0.0.1:7373', `-config-file=${config}`, '-log-level=info', ...joinTo.map(j => `-join=${j}`)]
    const proc = start('ip', args, { name: `serf ${name}`, stdio: ['ignore', 'pipe', 'pipe'], cwd: dir })
    const member: SerfMember = { name, address, dir, process: proc, joined: new Map(), failed: new Map() }
    const onLine = (line: string): void => {
      const at = performance.now()
      const m = /serf: (EventMemberJoin|EventMemberFailed): (\S+)/.exec(line)
      if (m == null) return
      const seen = m[1] === 'EventMemberJoin' ? member.joined : member.failed
      if (!seen.has(m[2]!)) seen.set(m[2]!, at)
    }
    createInterface({ input: proc.child.stdout! }).on('line', onLine)
    createInterface({ input: proc.child.stderr! }).on('line', onLine)
    this.members.push(member)
  }

  /** Every running agent has seen every other running agent join. */
  converged (): boolean {
    const live = this.members.filter(m => m.process.running)
    return live.every(m => live.every(o => m.joined.has(o.name)))
  }

  async waitConverged (timeoutMs: number): Promise<void> {
    await this.#waitFor(() => this.converged(), `all ${this.members.length} serf agents to see each other`, timeoutMs)
  }

  /** kill -9 member i (its process group). */
  kill (i: number): void {
    this.members[i]!.process.kill()
  }

  async #waitFor (fn: () => boolean, what: string, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!fn()) {
      const exited = this.members.find(m => m.process.exit != null && m.process.exit.signal !== 'SIGKILL')
      if (exited != null) throw new Error(`serf ${exited.name} exited (${exited.process.exit!.code ?? exited.process.exit!.signal}) while waiting for ${what}`)
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
      await new Promise(resolve => setTimeout(resolve, 100))
    }
  }

  async close (): Promise<void> {
    await Promise.all(this.members.map(async m => await m.process.stop(5000)))
  }
}
