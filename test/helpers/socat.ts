import { open, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { waitFor } from './cluster.ts'
import { start, type TestProcess } from './processes.ts'
import { exists } from '../../node/identity/files.ts'

/**
 * A pseudo-terminal pair from socat: the driver opens `devicePath` as if it
 * were a serial port, the test writes to `simPath` as if it were the device.
 * `unplug()` kills socat (both links vanish), `plug()` brings them back.
 */
export class PtyPair {
  readonly devicePath: string
  readonly simPath: string
  #process?: TestProcess
  #sim?: FileHandle

  constructor (dir: string) {
    this.devicePath = join(dir, 'ttyDEV')
    this.simPath = join(dir, 'ttySIM')
  }

  async plug (): Promise<void> {
    this.#process = start('socat', [`pty,raw,echo=0,link=${this.devicePath}`, `pty,raw,echo=0,link=${this.simPath}`], { name: `socat ${this.devicePath}` })
    await waitFor(async () => await exists(this.devicePath) && await exists(this.simPath), 'socat pty links', 10_000, 20)
    this.#sim = await open(this.simPath, 'r+')
  }

  /** Write lines as the device would. */
  async write (text: string): Promise<void> {
    if (this.#sim == null) throw new Error('pty is unplugged')
    await this.#sim.write(text)
  }

  async unplug (): Promise<void> {
    await this.#sim?.close()
    this.#sim = undefined
    const p = this.#process
    if (p == null || !p.running) return
    await p.stop()
    await waitFor(async () => !(await exists(this.devicePath)), 'socat links to vanish', 5000, 20)
  }
}
