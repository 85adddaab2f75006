import { existsSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from './ports.ts'
import { waitFor } from './cluster.ts'
import { start, type TestProcess } from './processes.ts'

// Debian installs it outside a normal user's PATH
const BINARY = existsSync('/usr/sbin/mosquitto') ? '/usr/sbin/mosquitto' : 'mosquitto'

/** A real mosquitto broker on 127.0.0.1 and a free port, stoppable and restartable on the same port. */
export class Mosquitto {
  readonly port: number
  readonly dir: string
  #process?: TestProcess
  #persistent = false

  private constructor (port: number, dir: string) {
    this.port = port
    this.dir = dir
  }

  /** With `persistent`, sessions and queued QoS 1 messages survive a broker restart (saved on stop). */
  static async start (options: { persistent?: boolean } = {}): Promise<Mosquitto> {
    const broker = new Mosquitto(await freePort(), await mkdtemp(join(tmpdir(), 'gatemesh-mqtt-')))
    broker.#persistent = options.persistent === true
    const persistence = broker.#persistent ? `persistence true\npersistence_location ${broker.dir}/\n` : 'persistence false\n'
    // started as root, mosquitto drops to the `mosquitto` user, which cannot
    // write its database into our 0700 temporary dir: it then loses every
    // session on a restart (log: "Error saving in-memory database ...
    // Permission denied") and a persistent subscriber misses what was
    // published before it resubscribed. `user root` keeps it as root.
    const user = process.getuid?.() === 0 ? 'user root\n' : ''
    await writeFile(join(broker.dir, 'mosquitto.conf'), `${user}listener ${broker.port} 127.0.0.1\nallow_anonymous true\n${persistence}`)
    await broker.resume()
    return broker
  }

  get url (): string {
    return `mqtt://127.0.0.1:${this.port}`
  }

  async resume (): Promise<void> {
    this.#process = start(BINARY, ['-c', join(this.dir, 'mosquitto.conf')], { name: `mosquitto on ${this.port}` })
    await waitFor(async () => await new Promise<boolean>(resolve => {
      const s = connect(this.port, '127.0.0.1', () => { s.destroy(); resolve(true) })
      s.on('error', () => { resolve(false) })
    }), `mosquitto on port ${this.port}`, 10_000, 50)
  }

  async stop (): Promise<void> {
    await this.#process?.stop()
    if (this.#persistent && !existsSync(join(this.dir, 'mosquitto.db'))) {
      throw new Error(`mosquitto on ${this.port} did not save its sessions to ${this.dir}/mosquitto.db: a restart would lose them`)
    }
  }

  async close (): Promise<void> {
    await this.stop()
    await rm(this.dir, { recursive: true, force: true })
  }
}
