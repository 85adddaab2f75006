import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises'
import { AlreadyInitializedError, MissingFileError } from './errors.ts'

/** Write a secret: mode 0600, never over an existing file. */
export async function writeSecret (path: string, data: string | Uint8Array): Promise<void> {
  try {
    await writeFile(path, data, { mode: 0o600, flag: 'wx' })
  } catch (err: any) {
    if (err.code === 'EEXIST') throw new AlreadyInitializedError(`${path} already exists; refusing to overwrite a key`)
    throw err
  }
  // the umask may have widened what `mode` asked for
  await chmod(path, 0o600)
}

export async function writePublic (path: string, data: string | Uint8Array): Promise<void> {
  await writeFile(path, data, { mode: 0o644 })
}

export async function ensureDir (path: string, mode = 0o700): Promise<void> {
  await mkdir(path, { recursive: true, mode })
}

export async function readRequired (path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path)
  } catch (err: any) {
    if (err.code === 'ENOENT') throw new MissingFileError(`${what} not found at ${path}`)
    throw new MissingFileError(`cannot read ${what} at ${path}: ${err.message}`, { cause: err })
  }
}

export async function exists (path: string): Promise<boolean> {
  try {
    await stat(path)
    return true
  } catch {
    return false
  }
}
