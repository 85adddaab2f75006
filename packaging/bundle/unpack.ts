import { randomBytes } from 'node:crypto'
import { mkdir, open, rename, rm, stat, type FileHandle } from 'node:fs/promises'
import { dirname, join, relative, resolve, sep } from 'node:path'
import { PathTraversalError } from './errors.ts'
import { scanBundle, type FileSink, type VerifiedBundle, type VerifyBundleOptions } from './verify.ts'

export interface UnpackedBundle extends VerifiedBundle {
  /** the directory holding the files, `manifest.json` and `manifest.jws` */
  dir: string
}

/**
 * Verify a bundle and unpack it into `destDir`, which must not exist yet.
 * Files land in a sibling staging directory and move into place only when
 * every check passed, so `destDir` either holds a whole verified bundle or
 * nothing.
 */
export async function unpackBundle (source: string | Uint8Array, destDir: string, options: VerifyBundleOptions): Promise<UnpackedBundle> {
  const dest = resolve(destDir)
  if (await stat(dest).then(() => true, () => false)) throw Object.assign(new Error(`${dest} already exists`), { code: 'EEXIST' })
  const staging = `${dest}.unpacking-${randomBytes(4).toString('hex')}`
  await mkdir(staging, { recursive: true, mode: 0o755 })
  try {
    const verified = await scanBundle(source, options, path => fileSink(staging, path))
    await rename(staging, dest)
    return { ...verified, dir: dest }
  } catch (err) {
    await rm(staging, { recursive: true, force: true })
    throw err
  }
}

/** A write-once file under `root`; names were validated, this re-checks containment anyway. */
function fileSink (root: string, path: string): FileSink {
  const target = resolve(root, path)
  const rel = relative(root, target)
  if (rel === '' || rel.startsWith('..') || rel.split(sep).includes('..')) {
    throw new PathTraversalError(`${path}: path escapes the bundle directory`, { entry: path })
  }
  let fh: FileHandle | undefined
  let opening: Promise<FileHandle> | undefined
  const handle = async (): Promise<FileHandle> => {
    opening ??= (async () => {
      await mkdir(dirname(target), { recursive: true, mode: 0o755 })
      // 'wx': never follow or overwrite anything already there
      fh = await open(target, 'wx', 0o644)
      return fh
    })()
    return await opening
  }
  return {
    async write (chunk) { await (await handle()).write(chunk) },
    async close () { await (await handle()).close() },
    async abort () {
      await fh?.close().catch(() => {})
      await rm(join(target), { force: true })
    }
  }
}
