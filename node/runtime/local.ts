import { join } from 'node:path'
import { ActionDispatcher } from '../actions/dispatcher.ts'
import { Sandbox } from '../actions/sandbox/sandbox.ts'
import { RuntimeMetrics } from '../metrics/runtime-metrics.ts'
import { Outbox } from '../outbox/outbox.ts'
import { UnpackedBundles, type BundleZips } from './bundle-store.ts'
import { Devices } from './devices.ts'
import { Runtime } from './runtime.ts'
import type { Config } from '../config/schema.ts'
import type { Database } from '../store/db.ts'
import type { Registry } from '../registry/registry.ts'
import type { GpioConstructor } from '../../sensors/gpio.ts'
import type { BackendName } from './backend.ts'
import type { Isolation } from '../actions/sandbox/probe.ts'
import type { Startable } from '@libp2p/interface'
import type { KeyObject } from 'node:crypto'
import type { Logger } from 'pino'
import type { Registry as PromRegistry } from 'prom-client'

export interface LocalRuntimeComponents {
  peerId: string
  dataDir: string
  config: Config
  db: Database
  registry: Pick<Registry, 'set'>
  fleetKey: KeyObject
  /** the bundle store, for the zips to unpack */
  bundleZips: BundleZips
  logger: Logger
  prometheus: PromRegistry
  /** re-announce `node/<self>` (the backend in use changed) */
  onBackend?: (backend: BackendName) => void
  gpio?: GpioConstructor
}

/**
 * Everything a node needs to act on its own: its sensors and actuators, the
 * outbox with the action channels behind it, and the model instances. The
 * agent starts it after the registry and stops it before.
 */
export class LocalRuntime implements Startable {
  readonly devices: Devices
  readonly bundles: UnpackedBundles
  readonly outbox: Outbox
  readonly runtime: Runtime
  readonly metrics: RuntimeMetrics
  readonly #dispatcher: ActionDispatcher
  readonly #c: LocalRuntimeComponents
  #sandbox?: Promise<Sandbox>
  #isolation?: Isolation

  constructor (c: LocalRuntimeComponents) {
    this.#c = c
    const { config } = c
    this.metrics = new RuntimeMetrics(c.prometheus)
    this.devices = new Devices({ logger: c.logger.child({ service: 'sensors' }), metrics: this.metrics, ...(c.gpio == null ? {} : { gpio: c.gpio }) }, config.sensors, config.actuators)
    this.#dispatcher = new ActionDispatcher({ logger: c.logger, actuators: this.devices.actuators, sandbox: async () => await this.sandbox() }, { notifications: config.notifications, scripts: config.scripts })
    this.outbox = new Outbox({ db: c.db, deliver: this.#dispatcher.deliver, logger: c.logger.child({ service: 'outbox' }), metrics: this.metrics }, config.outbox)
    this.bundles = new UnpackedBundles({ dataDir: c.dataDir, fleetKey: c.fleetKey, zips: c.bundleZips })
    this.runtime = new Runtime({
      node: c.peerId,
      sensors: this.devices.sensors,
      outbox: this.outbox,
      logger: c.logger.child({ service: 'runtime' }),
      metrics: this.metrics,
      fleetKey: c.fleetKey,
      bundles: this.bundles,
      db: c.db,
      registry: c.registry,
      ...(c.onBackend == null ? {} : { onBackend: c.onBackend }),
      // decided (and logged) when the first instance with scripts starts, not by agents that run none
      onScriptInstance: () => { void this.sandbox().catch(() => {}) }
    }, { dataDir: c.dataDir, ...config.runtime })
  }

  async start (): Promise<void> {
    await this.outbox.start()
    await this.devices.start()
    await this.runtime.start()
  }

  /**
   * The sandbox for action scripts, probed on first use (trying it costs a
   * Node start, which an agent without scripts need not pay). Logs what
   * isolation is in force, at warn when it is weaker than namespaces.
   */
  async sandbox (): Promise<Sandbox> {
    this.#sandbox ??= Sandbox.create({
      runDir: join(this.#c.dataDir, 'sandbox'),
      hide: [this.#c.dataDir],
      user: this.#c.config.scripts.user,
      apiPort: this.#c.config.api.port
    }, this.#c.logger.child({ service: 'sandbox' })).then(sandbox => {
      const i = this.#isolation = sandbox.isolation
      const log = this.#c.logger.child({ service: 'sandbox' })
      if (i.mode === 'none') log.warn({ isolation: i }, 'action scripts run WITHOUT isolation: no namespaces here, so a script can reach the network and signal the agent; only Node\'s permission model and resource limits apply')
      else log.info({ isolation: i }, `action scripts run isolated (${i.mode === 'user' ? `as ${i.user?.name ?? 'another user'}` : 'in a user namespace'}; ${i.namespaces.join(', ')} namespaces)`)
      return sandbox
    }).catch(err => {
      // tried again by the next script rather than failing every one after
      this.#sandbox = undefined
      throw err
    })
    return await this.#sandbox
  }

  /** How action scripts are isolated; undefined until the first one runs (or an instance with one starts). */
  get scriptIsolation (): Isolation | undefined {
    return this.#isolation
  }

  async stop (): Promise<void> {
    await this.runtime.stop()
    await this.devices.stop()
    await this.outbox.stop()
    await this.#dispatcher.close()
  }
}
