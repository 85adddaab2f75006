import { closeSync, ftruncateSync, mkdirSync, openSync, renameSync, rmSync, statSync, writeSync } from 'node:fs'
import { dirname } from 'node:path'

export const DEFAULT_RETRY_MS = 5_000

export interface RotatingFileInit {
  path: string
  /** Rotate when the current file would grow past this. */
  maxBytes: number
  /** Rotated files kept (`path.1` … `path.N`). */
  files: number
  /**
   * A write failed (disk full, I/O error): called once per failure, not per
   * line. Lines are dropped until a write succeeds again.
   */
  onError?: (err: NodeJS.ErrnoException, path: string) => void
  /** After a failed write, lines are dropped for this long before the next try. @default DEFAULT_RETRY_MS */
  retryMs?: number
  /** @default Date.now */
  now?: () => number
}

/**
 * A size-bounded log destination for pino: appends to `path`, and past
 * `maxBytes` shifts it to `path.1` (dropping the oldest). Writes are
 * synchronous so a crash never loses the lines before it. A write never
 * throws: a logger that throws takes down whatever was logging (and the
 * crash handler that logs the crash), so on a full disk lines are dropped
 * and counted, and once writing works again a line says how many.
 */
export class RotatingFile {
  readonly #init: RotatingFileInit
  readonly #retryMs: number
  readonly #now: () => number
  #fd = -1
  #size = 0
  /** when writing last failed; undefined while it works */
  #failedAt?: number
  #dropped = 0
  /** dropped since writing last failed */
  #lost = 0
  /** a failed write left part of a line that could not be taken back */
  #torn = false

  constructor (init: RotatingFileInit) {
    this.#init = init
    this.#retryMs = init.retryMs ?? DEFAULT_RETRY_MS
    this.#now = init.now ?? Date.now
    mkdirSync(dirname(init.path), { recursive: true })
    this.#open()
  }

  /** Lines dropped because writing failed. */
  get dropped (): number {
    return this.#dropped
  }

  write (chunk: string): boolean {
    if (this.#failedAt != null && this.#now() - this.#failedAt < this.#retryMs) {
      this.#dropped++
      this.#lost++
      return true
    }
    try {
      if (this.#fd < 0) this.#open()
      const recovered = this.#failedAt != null
      if (recovered) this.#writeRecovery()
      const bytes = Buffer.byteLength(chunk)
      if (this.#size > 0 && this.#size + bytes > this.#init.maxBytes) this.#rotate()
      this.#append(chunk)
      this.#failedAt = undefined
    } catch (err: any) {
      this.#dropped++
      this.#lost++
      const first = this.#failedAt == null
      this.#failedAt = this.#now()
      if (first) {
        try {
          this.#init.onError?.(err, this.#init.path)
        } catch {}
      }
    }
    return true
  }

  close (): void {
    if (this.#fd < 0) return
    closeSync(this.#fd)
    this.#fd = -1
  }

  #open (): void {
    this.#fd = openSync(this.#init.path, 'a', 0o640)
    this.#size = statSync(this.#init.path).size
  }

  /** Write all of `text`, or none of it: a line cut short by a full disk is taken back. */
  #append (text: string): void {
    const buf = Buffer.from(text)
    let done = 0
    try {
      while (done < buf.byteLength) done += writeSync(this.#fd, buf, done)
    } catch (err) {
      if (done > 0) {
        try {
          ftruncateSync(this.#fd, this.#size)
          done = 0
        } catch {
          // the next write starts on a new line instead
          this.#torn = true
        }
      }
      throw err
    } finally {
      this.#size += done
    }
  }

  /** After a failure: end a torn line, and say in the file what is missing from it. */
  #writeRecovery (): void {
    const note = JSON.stringify({ level: 'warn', time: this.#now(), service: 'logs', msg: 'log lines dropped: writing the log file failed', dropped: this.#lost })
    this.#append(`${this.#torn ? '\n' : ''}${note}\n`)
    this.#torn = false
    this.#lost = 0
  }

  #rotate (): void {
    closeSync(this.#fd)
    this.#fd = -1
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
    this.#open()
  }
}
