import { closeSync, openSync } from 'node:fs'
import { createInterface, type Interface } from 'node:readline'
import { join } from 'node:path'
import { start, type TestProcess } from '../../helpers/processes.ts'
import type { StartMessage } from './generator.ts'

const GENERATOR = new URL('./generator.ts', import.meta.url).pathname

/** One generator process, driven over JSON lines on its stdin/stdout. */
export class GeneratorProcess {
  readonly process: TestProcess
  readonly ports: Promise<number[]>
  readonly #lines: Interface
  readonly #waiting: Array<{ key: string, resolve: (v: any) => void, reject: (e: Error) => void }> = []

  constructor (dir: string, index: number, count: number) {
    const err = openSync(join(dir, `generator-${index}.log`), 'a')
    try {
      // nice: the generator plays the rest of the fleet and must not starve the agent it measures
      this.process = start('nice', ['-n', '5', process.execPath, GENERATOR, '--count', String(count)], {
        name: `scale generator ${index}`,
        stdio: ['pipe', 'pipe', err]
      })
    } finally {
      closeSync(err)
    }
    this.#lines = createInterface({ input: this.process.child.stdout! })
    this.#lines.on('line', line => {
      let msg: Record<string, unknown>
      try {
        msg = JSON.parse(line)
      } catch {
        return
      }
      const i = this.#waiting.findIndex(w => w.key in msg || 'error' in msg)
      if (i < 0) return
      const [w] = this.#waiting.splice(i, 1)
      if ('error' in msg) w!.reject(new Error(`generator ${index}: ${String(msg.error)}`))
      else w!.resolve(msg[w!.key])
    })
    void this.process.exited.then(exit => {
      for (const w of this.#waiting.splice(0)) w.reject(new Error(`generator ${index} exited (${exit.signal ?? String(exit.code)}); see generator-${index}.log`))
    })
    this.ports = this.#expect<number[]>('ports')
  }

  async #expect<T> (key: string, timeoutMs = 600_000): Promise<T> {
    return await new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error(`generator: no "${key}" within ${timeoutMs} ms`)) }, timeoutMs)
      this.#waiting.push({ key, resolve: v => { clearTimeout(timer); resolve(v) }, reject: e => { clearTimeout(timer); reject(e) } })
    })
  }

  async begin (msg: StartMessage): Promise<void> {
    const ready = this.#expect('ready')
    this.process.child.stdin!.write(JSON.stringify({ start: msg }) + '\n')
    await ready
  }

  async stats (): Promise<Record<string, unknown>> {
    const reply = this.#expect<Record<string, unknown>>('stats', 30_000)
    this.process.child.stdin!.write(JSON.stringify({ stats: true }) + '\n')
    return await reply
  }

  async stop (): Promise<void> {
    this.process.child.stdin?.end()
    await this.process.stop(15_000)
  }
}
