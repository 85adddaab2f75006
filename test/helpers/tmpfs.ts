import { execFile } from 'node:child_process'
import { mkdir, open, rm, statfs } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'

const exec = promisify(execFile)
const FILL = '.fill'

/** Why a test cannot mount a tmpfs here (not root), or undefined when it can. */
export function tmpfsUnavailable (): string | undefined {
  if (process.getuid?.() !== 0) return 'mounting a small tmpfs for a full disk needs root'
  return undefined
}

/**
 * A small tmpfs the test mounts (as root) to run out of space for real:
 * `fill()` takes all of it (or all but `leave` bytes) with a file, `free()`
 * deletes that file. Unmount it on every way out (t.teardown).
 */
export class Tmpfs {
  readonly dir: string
  #mounted = false

  private constructor (dir: string) {
    this.dir = dir
  }

  static async mount (dir: string, bytes: number): Promise<Tmpfs> {
    await mkdir(dir, { recursive: true })
    await exec('mount', ['-t', 'tmpfs', '-o', `size=${bytes},mode=0755`, 'tmpfs', dir])
    const fs = new Tmpfs(dir)
    fs.#mounted = true
    return fs
  }

  async freeBytes (): Promise<number> {
    const s = await statfs(this.dir)
    return s.bavail * s.bsize
  }

  /** Write a filler file until the disk is full, or until only `leave` bytes are free. */
  async fill (leave = 0): Promise<void> {
    const fh = await open(join(this.dir, FILL), 'a')
    const chunk = Buffer.alloc(64 * 1024, 0x55)
    try {
      while (true) {
        const free = await this.freeBytes()
        if (free <= leave) return
        const n = Math.min(chunk.byteLength, free - leave)
        try {
          await fh.write(chunk, 0, n)
        } catch (err: any) {
          if (err.code === 'ENOSPC') return
          throw err
        }
      }
    } finally {
      await fh.close()
    }
  }

  /** Give the space back. */
  async free (): Promise<void> {
    await rm(join(this.dir, FILL), { force: true })
  }

  async unmount (): Promise<void> {
    if (!this.#mounted) return
    this.#mounted = false
    // lazily: a process the test killed may still be letting go of its files
    await exec('umount', ['-l', this.dir]).catch(() => {})
  }
}
