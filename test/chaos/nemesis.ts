/**
 * Applies the plan (schedule.ts) to the lab: each fault at its offset, each
 * ended at its `until`, and every fault still on ended by `endAll()` however
 * the run stops. What it did, and when, is kept for the report.
 */
import { generateKeyPairSync } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { authorizeThrough } from '../../node/cli/fleet-write.ts'
import { deploymentKey } from '../../node/scheduler/keys.ts'
import { run } from '../helpers/processes.ts'
import type { ChaosLab } from './lab.ts'
import type { Fault } from './schedule.ts'

export interface AppliedFault {
  kind: Fault['kind']
  targets: string[]
  bridge?: string
  /** seconds from the start of the nemesis */
  startedS: number
  endedS?: number
  /** for tamper: what each agent answered */
  outcome?: Record<string, unknown>
  error?: string
}

/** Agents a fault puts out of reach (the ones to watch come back when it ends). */
export function affected (f: Fault): number[] {
  if (f.kind === 'bridge') return [...f.targets]
  if (f.kind === 'receiver' || f.kind === 'broker' || f.kind === 'tamper') return []
  return [...f.targets]
}

export class Nemesis {
  readonly applied: AppliedFault[] = []
  readonly #lab: ChaosLab
  readonly #active = new Map<Fault, AppliedFault>()
  readonly #applying = new Map<Fault, Promise<void>>()
  readonly #t0: number
  /** called when a fault has ended, with the agents it had put out of reach */
  onEnd?: (fault: Fault, agents: string[]) => void
  #tamperRound = 0

  constructor (lab: ChaosLab, t0: number) {
    this.#lab = lab
    this.#t0 = t0
  }

  get activeCount (): number {
    return this.#active.size
  }

  /** Agents under a fault right now. */
  faulted (): Set<string> {
    return new Set([...this.#active.keys()].flatMap(f => affected(f).map(i => this.#lab.agents[i]!)))
  }

  #name (i: number): string {
    return this.#lab.agents[i]!
  }

  #now (): number {
    return Math.round((Date.now() - this.#t0) / 100) / 10
  }

  /** Apply a fault; `end` waits for this to finish (a disk still being filled is not freed under it). */
  async begin (f: Fault): Promise<void> {
    const applying = this.#apply(f)
    this.#applying.set(f, applying)
    await applying
  }

  async #apply (f: Fault): Promise<void> {
    const record: AppliedFault = { kind: f.kind, targets: f.targets.map(i => this.#name(i)), startedS: this.#now(), ...(f.bridge == null ? {} : { bridge: this.#name(f.bridge) }) }
    this.applied.push(record)
    this.#active.set(f, record)
    const lab = this.#lab
    const host = (i: number): string => lab.lab.hosts[i]!
    try {
      switch (f.kind) {
        case 'kill':
          lab.cluster.kill(this.#name(f.targets[0]!))
          break
        case 'pause':
          lab.cluster.node(this.#name(f.targets[0]!)).process?.signal('SIGSTOP')
          break
        case 'split':
          await lab.lab.split(f.targets)
          break
        case 'bridge':
          for (const [a, b] of sides(f)) await ip('-n', host(a), 'route', 'add', 'blackhole', `${lab.lab.address(b)}/32`)
          break
        case 'oneway':
          // every frame it sends goes to a MAC nobody has: dropped on the wire, silently, while what others send still arrives
          for (const peer of others(lab, f.targets[0]!)) await ip('-n', host(f.targets[0]!), 'neigh', 'replace', peer, 'lladdr', NOWHERE, 'dev', 'eth0', 'nud', 'permanent')
          break
        case 'skew':
          await lab.setClock(this.#name(f.targets[0]!), '+5m')
          break
        case 'disk':
          await lab.disks.get(this.#name(f.targets[0]!))!.fill()
          break
        case 'receiver':
          lab.receiver('down')
          break
        case 'broker':
          await lab.stopBroker()
          break
        case 'tamper':
          record.outcome = await this.#tamper(this.#name(f.targets[0]!))
          break
      }
    } catch (err: any) {
      record.error = String(err.message ?? err).slice(0, 300)
    }
  }

  async end (f: Fault): Promise<void> {
    const record = this.#active.get(f)
    if (record == null) return
    this.#active.delete(f)
    await this.#applying.get(f)
    this.#applying.delete(f)
    const lab = this.#lab
    const host = (i: number): string => lab.lab.hosts[i]!
    try {
      switch (f.kind) {
        case 'kill':
          await lab.startAgent(this.#name(f.targets[0]!), { wait: false })
          break
        case 'pause':
          lab.cluster.node(this.#name(f.targets[0]!)).process?.signal('SIGCONT')
          break
        case 'split':
          await lab.lab.heal()
          break
        case 'bridge':
          for (const [a, b] of sides(f)) await ip('-n', host(a), 'route', 'del', 'blackhole', `${lab.lab.address(b)}/32`).catch(() => {})
          break
        case 'oneway':
          for (const peer of others(lab, f.targets[0]!)) await ip('-n', host(f.targets[0]!), 'neigh', 'del', peer, 'dev', 'eth0').catch(() => {})
          break
        case 'skew':
          await lab.setClock(this.#name(f.targets[0]!), '+0')
          break
        case 'disk':
          await lab.disks.get(this.#name(f.targets[0]!))!.free()
          break
        case 'receiver':
          lab.receiver('up')
          break
        case 'broker':
          await lab.resumeBroker()
          break
        case 'tamper':
          break
      }
    } catch (err: any) {
      record.error = `${record.error ?? ''} end: ${String(err.message ?? err)}`.trim().slice(0, 300)
    }
    record.endedS = this.#now()
    this.onEnd?.(f, affected(f).map(i => this.#name(i)))
  }

  /** End every fault still on (any way out of the run goes through here). */
  async endAll (): Promise<void> {
    for (const f of [...this.#active.keys()]) await this.end(f)
  }

  /**
   * What a stolen gateway or a `developer` user could offer: the signed
   * bundle with one byte changed, a deployment with no authorisation, and
   * one authorised with a key the fleet never certified. Each must be
   * refused; the checker looks for any of them stored or run afterwards.
   */
  async #tamper (via: string): Promise<Record<string, unknown>> {
    const lab = this.#lab
    const round = this.#tamperRound++
    const node = lab.cluster.node(via)
    const bytes = await readFile(lab.bundleZip)
    // a byte inside the zip's data (past the first local header), so the archive still opens
    const at = 200 + ((round * 7919) % Math.max(1, bytes.byteLength - 400))
    bytes[at] = bytes[at]! ^ 0x5a
    const file = join(lab.cluster.root, `tampered-${round}.zip`)
    await writeFile(file, bytes)
    const token = await lab.cluster.token(via)
    const post = `fetch(process.argv[1], { method: 'POST', headers: { 'content-type': 'application/zip', authorization: 'Bearer ' + process.argv[2] }, body: require('node:fs').readFileSync(process.argv[3]) }).then(async r => console.log(r.status), e => console.log('error ' + e.message))`
    const bundle = await run('ip', ['netns', 'exec', node.netns!, process.execPath, '-e', post, `${node.api}/v1/bundles`, token, file], { timeoutMs: 60_000 })
      .then(r => r.stdout.trim(), (err: Error) => `error ${err.message.slice(0, 100)}`)
    const spec = { id: `rogue-${round}`, model: { name: 'anomaly', version: '1.0.0' }, replicas: 1, instance: { name: `rogue-${round}` } }
    const unsigned = await lab.cluster.request(via, 'PUT', `/v1/deployments/${spec.id}`, { spec }).then(r => r.status, (err: Error) => `error ${err.message.slice(0, 100)}`)
    const stranger = generateKeyPairSync('ed25519').privateKey
    const forged = await authorizeThrough(async (_m, path) => await lab.cluster.get(via, path), deploymentKey(spec.id), JSON.stringify(spec), { key: stranger })
      .then(async auth => (await lab.cluster.request(via, 'PUT', `/v1/deployments/${spec.id}`, { spec, auth })).status, (err: Error) => `error ${err.message.slice(0, 100)}`)
    return { tamperedBundle: bundle, unsignedDeployment: unsigned, strangerSignedDeployment: forged }
  }
}

/** A locally administered MAC that no host in the lab has. */
const NOWHERE = '02:00:00:00:de:ad'

/** Addresses of every other host in the lab: agents, coordinator, receivers, rogue. */
function others (lab: ChaosLab, i: number): string[] {
  return lab.lab.hosts.map((_h, j) => j).filter(j => j !== i).map(j => lab.lab.address(j))
}

/** Pairs (from, to) a bridge fault blackholes: side A is the first half of the targets, side B the rest. */
function sides (f: Fault): Array<[number, number]> {
  const half = Math.ceil(f.targets.length / 2)
  const a = f.targets.slice(0, half)
  const b = f.targets.slice(half)
  return [...a.flatMap(x => b.map(y => [x, y] as [number, number])), ...b.flatMap(y => a.map(x => [y, x] as [number, number]))]
}

async function ip (...args: string[]): Promise<void> {
  await run('ip', args, { timeoutMs: 30_000 })
}
