import { spawnSync } from 'node:child_process'
import { mkdir, open, rm, statfs } from 'node:fs/promises'
import { join } from 'node:path'
import { onExit } from 'signal-exit'
import { run } from './processes.ts'

const FILL = '.fill'
const mounted = new Set<string>()

// a test that exits, throws, is interrupted or hits tap's timeout (SIGALRM, then SIGKILL) leaves no mount behind
function unmountAllSync (): void {
  for (const dir of mounted) spawnSync('umount', ['-l', dir], { stdio: 'ignore', timeout: 5000 })
  mounted.clear()
}
let hooked = false
function hook (): void {
  if (hooked) return
  hooked = true
  onExit(() => { unmountAllSync() })
  if (process.env.TAP === '1') process.on('SIGALRM', unmountAllSync)
}

/** Why a test cannot mount a tmpfs here (not root), or undefined when it can. */
export function tmpfsUnavailable (): string | undefined {
  if (process.getuid?.() !== 0) return 'mounting a small tmpfs for a full disk needs root'
  return undefined
}

/**
 * A small tmpfs the test mounts (as root) to run out of space for real:
 * `fill()` takes all of it (or all but `leave` bytes) with a file, `free()`
 * deletes that file. Unmount it in t.teardown; a test process that exits
 * or is interrupted without doing so unmounts it on the way out.
 */
export class Tmpfs {
  readonly dir: string
  #mounted = false

  private constructor (dir: string) {
    this.dir = dir
  }

  static async mount (dir: string, bytes: number): Promise<Tmpfs> {
    await mkdir(dir, { recursive: true })
    hook()
    await run('mount', ['-t', 'tmpfs', '-o', `size=${bytes},mode=0755`, 'tmpfs', dir], { timeoutMs: 30_000 })
    mounted.add(dir)
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
    await run('umount', ['-l', this.dir], { timeoutMs: 30_000 }).catch(() => {})
    mounted.delete(this.dir)
  }
}
