import { closeSync, mkdirSync, openSync, renameSync, rmSync, statSync, writeSync } from 'node:fs'
import { dirname } from 'node:path'

export interface RotatingFileInit {
  path: string
  /** Rotate when the current file would grow past this. */
  maxBytes: number
  /** Rotated files kept (`path.1` … `path.N`). */
  files: number
}

/**
 * A size-bounded log destination for pino: appends to `path`, and past
 * `maxBytes` shifts it to `path.1` (dropping the oldest). Writes are
 * synchronous so a crash never loses the lines before it.
 */
export class RotatingFile {
  readonly #init: RotatingFileInit
  #fd: number
  #size: number

  constructor (init: RotatingFileInit) {
    this.#init = init
    mkdirSync(dirname(init.path), { recursive: true })
    this.#fd = openSync(init.path, 'a', 0o640)
    this.#size = statSync(init.path).size
  }

  write (chunk: string): boolean {
    const bytes = Buffer.byteLength(chunk)
    if (this.#size > 0 && this.#size + bytes > this.#init.maxBytes) this.#rotate()
    writeSync(this.#fd, chunk)
    this.#size += bytes
    return true
  }

  close (): void {
    closeSync(this.#fd)
  }

  #rotate (): void {
    closeSync(this.#fd)
    const { path, files } = this.#init
    if (files === 0) {
      rmSync(path, { force: true })
    } else {
      rmSync(`${path}.${files}`, { force: true })
      for (let i = files - 1; i >= 1; i--) {
        try { renameSync(`${path}.${i}`, `${path}.${i + 1}`) } catch {}
      }
      renameSync(path, `${path}.1`)
    }
    this.#fd = openSync(path, 'a', 0o640)
    this.#size = 0
  }
}
