/**
 * The chaos run's mesh: agents, a coordinator and the receivers, each in a
 * network namespace of its own on a switch the run builds (NetLab), every
 * agent's data dir on a small tmpfs of its own (so one can be filled), every
 * agent under libfaketime with a clock offset file of its own (so one can be
 * skewed without a restart). Every process goes through
 * test/helpers/processes.ts; `close()` removes processes, mounts and
 * namespaces, and the exit hooks and the reaper do it on any other way out.
 */
import { access, cp, mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { openSync, closeSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { RUNTIME_FILE } from '../../node/agent.ts'
import { loadFleet } from '../../node/identity/fleet.ts'
import { anomalyBundleZip, SCALE } from '../helpers/anomaly-bundle.ts'
import { bundleCommand } from '../helpers/app-bundle.ts'
import { budget, startBudget } from '../helpers/budget.ts'
import { CLI, Cluster, SOURCES_COMMAND, sleep, waitFor } from '../helpers/cluster.ts'
import { NetLab, Probe } from '../helpers/netns.ts'
import { run, start, type TestProcess } from '../helpers/processes.ts'
import { Tmpfs } from '../helpers/tmpfs.ts'
import { deploy } from '../helpers/scheduling.ts'

const FAKETIME_LIBS = ['/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1', '/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1']
const SINK = new URL('./sink.ts', import.meta.url).pathname
const ROGUE = new URL('../helpers/rogue.ts', import.meta.url).pathname
/** the registry key the rogue peer writes with no fleet authorisation, all run long */
export const FORGED_KEY = 'deployment/rogue-peer'
const MOSQUITTO = '/usr/sbin/mosquitto'
export const COORDINATOR_PASSWORD = 'chaos-admin-password'
const COORDINATOR_PORT = 7500
const SINK_PORT = 8080
const BROKER_PORT = 1883
/** each agent's data dir: big enough for its bundles, logs and database, small enough to fill in a moment */
const DISK_BYTES = 96 * 1024 * 1024

/** What one receiver saw: a line of test/chaos/sink.ts. */
export interface Delivery {
  ch: 'http' | 'mqtt'
  key: string
  body: string
  topic?: string
  at: number
}

/** Why this machine cannot run the chaos suite (not root, no iproute2, no libfaketime, no mosquitto), or undefined. */
export async function chaosUnavailable (): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'network namespaces and tmpfs mounts need root'
  const ns = await NetLab.available()
  if (!ns.ok) return `network namespaces are not available here (${ns.reason ?? 'ip netns add failed'})`
  if (await faketimeLib() == null) return 'libfaketime is not installed (Debian package faketime)'
  if (!await access(MOSQUITTO).then(() => true, () => false)) return 'mosquitto is not installed'
  return undefined
}

async function faketimeLib (): Promise<string | undefined> {
  for (const l of FAKETIME_LIBS) if (await access(l).then(() => true, () => false)) return l
  return undefined
}

export class ChaosLab {
  readonly agents: string[]
  readonly lab: NetLab
  readonly cluster: Cluster
  readonly disks = new Map<string, Tmpfs>()
  readonly deliveries: Delivery[] = []
  bundleDigest = ''
  bundleZip = ''
  coordinatorToken = ''
  #faketime = ''
  #coordinator?: TestProcess
  #coordinatorProbe?: Probe
  #sink?: TestProcess
  #broker?: TestProcess
  readonly #log: (msg: string) => void

  private constructor (lab: NetLab, cluster: Cluster, agents: number, log: (msg: string) => void) {
    this.lab = lab
    this.cluster = cluster
    this.agents = Array.from({ length: agents }, (_, i) => `n${i + 1}`)
    this.#log = log
  }

  /** hosts: agents first, then the coordinator's, the receivers' and the rogue peer's */
  get coordinatorHost (): string { return this.lab.hosts[this.agents.length]! }
  get sinkHost (): string { return this.lab.hosts[this.agents.length + 1]! }
  get sinkAddress (): string { return this.lab.address(this.agents.length + 1) }
  get webhookUrl (): string { return `http://${this.sinkAddress}:${SINK_PORT}` }
  get brokerUrl (): string { return `mqtt://${this.sinkAddress}:${BROKER_PORT}` }
  get coordinatorProbe (): Probe { return this.#coordinatorProbe! }
  get coordinatorApi (): string { return `http://127.0.0.1:${COORDINATOR_PORT}` }

  static async create (agents: number, log: (msg: string) => void): Promise<ChaosLab> {
    const lib = await faketimeLib()
    if (lib == null) throw new Error('libfaketime is not installed (Debian package faketime)')
    const lab = await NetLab.create(agents + 3)
    let cluster: Cluster
    try {
      cluster = await Cluster.create({ command: await bundleCommand() })
    } catch (err) {
      await lab.destroy()
      throw err
    }
    const chaos = new ChaosLab(lab, cluster, agents, log)
    chaos.#faketime = lib
    return chaos
  }

  offsetFile (name: string): string {
    return join(this.cluster.root, `${name}.faketime`)
  }

  async setClock (name: string, offset: string): Promise<void> {
    await writeFile(this.offsetFile(name), `${offset}\n`)
  }

  /** Receivers and broker, agents (with sensors), the coordinator, the bundle and the two standing deployments. */
  async setUp (): Promise<void> {
    await this.#startBroker()
    await this.#startSink()
    for (const [i, name] of this.agents.entries()) {
      this.disks.set(name, await Tmpfs.mount(join(this.cluster.root, name), DISK_BYTES))
      await this.setClock(name, '+0')
      await this.cluster.addNode(name, {
        role: i === 0 ? 'server' : 'gateway',
        bootstrap: i === 0 ? [] : i === 1 ? ['n1'] : ['n1', 'n2'],
        netns: { ns: this.lab.hosts[i]!, address: this.lab.address(i) },
        config: {
          logs: { stdout: false, level: 'info' },
          sensors: [{ id: 'temp1', type: 'simulated', unit: '°C', waveform: 'sine', offset: 20, amplitude: 2, periodMs: 20_000, noise: 0.1, rateHz: 2, spikes: { every: 40, magnitude: 15 }, min: -40, max: 125 }],
          notifications: { mqtt: { url: this.brokerUrl } },
          // retries every 0.2–3 s, and never given up within a run: a fault lasts 20 s at most
          outbox: { baseDelayMs: 200, maxDelayMs: 3000, maxAttempts: 1000 }
        }
      })
    }
    // the coordinator first: it loads from sources, the slowest start, best not beside seven others
    await this.#startCoordinator()
    // the first agent's start measures the machine (test/helpers/budget.ts); then the rest together
    await this.startAgent('n1')
    await Promise.all(this.agents.slice(1).map(async n => { await this.startAgent(n) }))
    await this.#startRogue()
    await waitFor(async () => (await Promise.all(this.agents.map(async n => await this.aliveCount(n)))).every(c => c >= this.agents.length), 'every agent to see every agent alive', 120_000, 1000)
    this.#log(`${this.agents.length} agents up, every one sees all alive`)

    const fleet = await loadFleet(this.cluster.fleetDir)
    const built = await anomalyBundleZip(fleet.privateKey, { under: this.cluster.root })
    this.bundleDigest = built.digest
    this.bundleZip = built.out
    await run('ip', ['netns', 'exec', this.lab.hosts[0]!, process.execPath, CLI, 'bundle', 'publish', built.out, '--api', this.cluster.node('n1').api, '--token-file', join(this.cluster.node('n1').dir, 'api.token')], { timeoutMs: budget(120_000) })
    // every agent holds the bundle before the faults: a node cut off runs what it holds
    await Promise.all(this.agents.map(async n => { await this.cluster.request(n, 'POST', `/v1/bundles/${built.digest}/pull`) }))
    await waitFor(async () => (await Promise.all(this.agents.map(async n => (await this.cluster.get(n, `/v1/bundles/${built.digest}`).catch(() => null))?.state)))
      .every(s => s === 'complete'), 'every agent to hold the bundle', 120_000, 1000)
    await deploy(this.cluster, 'n1', this.notifySpec())
    await deploy(this.cluster, 'n1', this.senseSpec())
    await waitFor(async () => {
      const s = await this.cluster.get('n1', '/v1/deployments')
      const running = (id: string): number => (s.deployments.find((d: any) => d.id === id)?.instances ?? []).filter((i: any) => i.state === 'running').length
      return running('notify') === 3 && running('sense') === this.agents.length
    }, 'notify on three agents and sense on all', 180_000, 1000)
    this.#log('deployments notify (3 replicas) and sense (one per agent) running')
  }

  /** Predict-driven: every anomaly a client asks about is posted to the webhook and published to MQTT. */
  notifySpec (): Record<string, unknown> {
    return {
      id: 'notify',
      model: { name: 'anomaly', version: '1.0.0' },
      replicas: 3,
      placement: { policy: 'spread' },
      instance: {
        name: 'notify',
        rules: [{ name: 'alert', when: 'class == "anomaly"', actions: [{ type: 'http.post', url: `${this.webhookUrl}/notify` }, { type: 'mqtt.publish', topic: 'chaos/notify' }] }]
      }
    }
  }

  /** Sensor-driven: each agent's simulated sensor spikes every 20 s; a spike is posted to the webhook. */
  senseSpec (): Record<string, unknown> {
    return {
      id: 'sense',
      model: { name: 'anomaly', version: '1.0.0' },
      replicas: this.agents.length,
      placement: { policy: 'spread' },
      instance: {
        name: 'sense',
        input: { sensors: ['temp1'], window: { size: 16 }, preprocess: [{ op: 'scale', ...SCALE }] },
        rules: [{ name: 'spike', when: 'class == "anomaly" && score > 0.9', cooldownMs: 10_000, actions: [{ type: 'http.post', url: `${this.webhookUrl}/sense` }] }]
      }
    }
  }

  async aliveCount (observer: string): Promise<number> {
    const agents = new Set(this.agents.map(n => this.cluster.node(n).peerId))
    return [...(await this.cluster.members(observer)).entries()].filter(([id, m]) => m.state === 'alive' && agents.has(id)).length
  }

  /** Start (or restart) an agent in its namespace, under libfaketime with its own offset file. */
  async startAgent (name: string, options: { wait?: boolean } = {}): Promise<void> {
    const node = this.cluster.node(name)
    await rm(join(node.dir, RUNTIME_FILE), { force: true }).catch(() => {})
    const command = this.cluster.command
    const err = openSync(join(this.cluster.root, `${name}.stderr.log`), 'a')
    try {
      node.startedAt = performance.now()
      node.process = start('ip', ['netns', 'exec', node.netns!, command.exec, ...command.args, 'agent', '--data', node.dir], {
        name: `agent ${name}`,
        stdio: ['ignore', 'ignore', err],
        // only the wall clock moves: timers and the monotonic clock stay true
        env: { ...command.env, LD_PRELOAD: this.#faketime, FAKETIME_TIMESTAMP_FILE: this.offsetFile(name), FAKETIME_DONT_FAKE_MONOTONIC: '1', FAKETIME_CACHE_DURATION: '1' }
      })
      node.child = node.process.child
    } finally {
      closeSync(err)
    }
    if (options.wait !== false) await this.cluster.waitReady(name)
  }

  async stderr (name: string): Promise<string> {
    return await readFile(join(this.cluster.root, `${name}.stderr.log`), 'utf8').catch(() => '')
  }

  async #startBroker (): Promise<void> {
    const dir = join(this.cluster.root, 'mqtt')
    await mkdir(dir, { recursive: true })
    // as root mosquitto would drop to its own user, which cannot write into our directory (see test/helpers/mosquitto.ts)
    await writeFile(join(dir, 'mosquitto.conf'), `user root\nlistener ${BROKER_PORT} ${this.sinkAddress}\nallow_anonymous true\npersistence true\npersistence_location ${dir}/\n`)
    await this.resumeBroker()
  }

  async resumeBroker (): Promise<void> {
    this.#broker = start('ip', ['netns', 'exec', this.sinkHost, MOSQUITTO, '-c', join(this.cluster.root, 'mqtt', 'mosquitto.conf')], { name: 'mosquitto (chaos)' })
    await sleep(300)
  }

  /** A broker outage: stopped cleanly (it saves its sessions and queued messages), restarted by `resumeBroker`. */
  async stopBroker (): Promise<void> {
    await this.#broker?.stop(budget(10_000))
  }

  async #startSink (): Promise<void> {
    const p = this.#sink = start('ip', ['netns', 'exec', this.sinkHost, process.execPath, SINK, '--host', this.sinkAddress, '--port', String(SINK_PORT), '--mqtt', this.brokerUrl, '--topic', 'chaos/#'], {
      name: 'chaos receivers',
      stdio: ['pipe', 'pipe', 'inherit']
    })
    let connected = false
    createInterface({ input: p.child.stdout! }).on('line', line => {
      try {
        const d = JSON.parse(line)
        if (d.ch === 'http' || d.ch === 'mqtt') this.deliveries.push(d)
        else if (d.state === 'mqtt-connected') connected = true
      } catch {}
    })
    await waitFor(() => connected, 'the receivers to connect to the broker', 60_000, 200)
  }

  receiver (state: 'up' | 'down'): void {
    this.#sink?.child.stdin?.write(`${state}\n`)
  }

  /**
   * A peer with a valid gateway certificate running test/helpers/rogue.ts:
   * all run long it gossips and pushes (registry-sync) a deployment it
   * wrote with no fleet authorisation. It is no SWIM member, so nothing is
   * placed on it; the checker looks for its key on every agent.
   */
  async #startRogue (): Promise<void> {
    const i = this.agents.length + 2
    const node = await this.cluster.addNode('rogue', { bootstrap: ['n1', 'n2'], netns: { ns: this.lab.hosts[i]!, address: this.lab.address(i) } })
    const err = openSync(join(this.cluster.root, 'rogue.stderr.log'), 'a')
    try {
      node.process = start('ip', ['netns', 'exec', node.netns!, process.execPath, ROGUE, '--data', node.dir, '--forge', FORGED_KEY], { name: 'rogue peer (chaos)', stdio: ['ignore', 'ignore', err] })
      node.child = node.process.child
    } finally {
      closeSync(err)
    }
  }

  async #startCoordinator (): Promise<void> {
    const dataDir = join(this.cluster.root, 'coordinator')
    await run(process.execPath, [CLI, 'user', 'add', '--admin', '--data', dataDir, '--username', 'admin', '--password-stdin'], { input: `${COORDINATOR_PASSWORD}\n`, timeoutMs: budget(120_000) })
    const address = this.lab.address(this.agents.length)
    const args = [SOURCES_COMMAND.exec, ...SOURCES_COMMAND.args, 'coordinator', '--data', dataDir, '--fleet', this.cluster.fleetDir, '--host', '127.0.0.1', '--port', String(COORDINATOR_PORT), '--p2p-listen', `/ip4/${address}/tcp/4001`, '--bootstrap', this.cluster.node('n1').multiaddr, '--bootstrap', this.cluster.node('n2').multiaddr]
    const err = openSync(join(this.cluster.root, 'coordinator.stderr.log'), 'a')
    try {
      // from sources: the coordinator ships as the npm package (test/helpers/coordinator-process.ts)
      this.#coordinator = start('ip', ['netns', 'exec', this.coordinatorHost, ...args], { name: 'coordinator (chaos)', stdio: ['ignore', 'ignore', err] })
    } finally {
      closeSync(err)
    }
    this.#coordinatorProbe = new Probe(this.coordinatorHost)
    const probe = this.#coordinatorProbe
    const deadline = Date.now() + Math.max(120_000, startBudget())
    while ((await probe.request('GET', `${this.coordinatorApi}/healthz`).catch(() => null))?.status !== 200) {
      if (this.#coordinator.exit != null) throw new Error(`the coordinator exited: ${await readFile(join(this.cluster.root, 'coordinator.stderr.log'), 'utf8')}`)
      if (Date.now() > deadline) throw new Error(`the coordinator did not answer within ${Math.max(120_000, startBudget())} ms`)
      await sleep(1000)
    }
    // a login is scrypt at work: on a busy machine the probe's 5 s can pass before the answer
    this.coordinatorToken = await waitFor(async () => {
      const login = await probe.request('POST', `${this.coordinatorApi}/api/v1/auth/login`, { username: 'admin', password: COORDINATOR_PASSWORD })
      if (login.status !== 200) throw new Error(`coordinator login: ${login.status} ${JSON.stringify(login.body)}`)
      return login.body.token as string
    }, 'a coordinator login', 60_000, 1000)
    this.#log('coordinator up')
  }

  /** Everything down and removed: processes, mounts, namespaces, the directory; each agent's log copied to `keepLogs` first. */
  async close (keepLogs?: string): Promise<void> {
    this.#sink?.kill()
    this.#coordinatorProbe?.close()
    await this.#coordinator?.stop(budget(10_000))
    await Promise.all(this.agents.map(async n => { if (this.cluster.nodes.has(n)) await this.cluster.stop(n, 5000) }))
    await this.#broker?.stop(5000)
    if (keepLogs != null) {
      await mkdir(keepLogs, { recursive: true })
      for (const n of [...this.agents, 'rogue']) {
        const node = this.cluster.nodes.get(n)
        if (node != null) await cp(join(node.dir, 'logs', 'agent.log'), join(keepLogs, `${n}.log`)).catch(() => {})
        await cp(join(this.cluster.root, `${n}.stderr.log`), join(keepLogs, `${n}.stderr.log`)).catch(() => {})
      }
      await cp(join(this.cluster.root, 'coordinator.stderr.log'), join(keepLogs, 'coordinator.stderr.log')).catch(() => {})
    }
    // routes and neighbour entries live in the namespaces, which go; mounts first, they are inside the directory
    for (const d of this.disks.values()) await d.unmount()
    await this.cluster.close()
    await this.lab.destroy()
  }
}
