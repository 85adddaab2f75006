import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import { ActionDispatcher } from '../actions/dispatcher.ts'
import { CONFIG_FILE } from '../config/config.ts'
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

  constructor (c: LocalRuntimeComponents) {
    this.#c = c
    const { config } = c
    this.metrics = new RuntimeMetrics(c.prometheus)
    this.devices = new Devices({ logger: c.logger.child({ service: 'sensors' }), metrics: this.metrics, ...(c.gpio == null ? {} : { gpio: c.gpio }) }, config.sensors, config.actuators)
    this.#dispatcher = new ActionDispatcher({ logger: c.logger, actuators: this.devices.actuators }, { notifications: config.notifications, scripts: config.scripts })
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
      ...(c.onBackend == null ? {} : { onBackend: c.onBackend })
    }, { dataDir: c.dataDir, ...config.runtime })
  }

  async start (): Promise<void> {
    await this.#warnOnReadableSecrets()
    await this.outbox.start()
    await this.devices.start()
    await this.runtime.start()
  }

  /** Channel credentials live in config.json; say so (without them) when others can read it. */
  async #warnOnReadableSecrets (): Promise<void> {
    const n = this.#c.config.notifications
    if (n.smtp?.password == null && n.sms == null && n.mqtt?.password == null) return
    const path = join(this.#c.dataDir, CONFIG_FILE)
    const mode = await stat(path).then(s => s.mode & 0o777, () => undefined)
    if (mode != null && (mode & 0o077) !== 0) {
      this.#c.logger.warn({ service: 'actions', path, mode: mode.toString(8) }, 'config.json holds notification credentials and is readable by others; chmod 600 it')
    }
  }

  async stop (): Promise<void> {
    await this.runtime.stop()
    await this.devices.stop()
    await this.outbox.stop()
    await this.#dispatcher.close()
  }
}
