import { existsSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from '../../node/cli/ports.ts'
import { waitFor } from './cluster.ts'
import { start, type TestProcess } from './processes.ts'

// Debian installs it outside a normal user's PATH
const BINARY = existsSync('/usr/sbin/mosquitto') ? '/usr/sbin/mosquitto' : 'mosquitto'

/** A real mosquitto broker on 127.0.0.1 and a free port, stoppable and restartable on the same port. */
export class Mosquitto {
  readonly port: number
  readonly dir: string
  #process?: TestProcess

  private constructor (port: number, dir: string) {
    this.port = port
    this.dir = dir
  }

  /** With `persistent`, sessions and queued QoS 1 messages survive a broker restart (saved on stop). */
  static async start (options: { persistent?: boolean } = {}): Promise<Mosquitto> {
    const broker = new Mosquitto(await freePort(), await mkdtemp(join(tmpdir(), 'gatemesh-mqtt-')))
    const persistence = options.persistent === true ? `persistence true\npersistence_location ${broker.dir}/\n` : 'persistence false\n'
    await writeFile(join(broker.dir, 'mosquitto.conf'), `listener ${broker.port} 127.0.0.1\nallow_anonymous true\n${persistence}`)
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
  }

  async close (): Promise<void> {
    await this.stop()
    await rm(this.dir, { recursive: true, force: true })
  }
}
