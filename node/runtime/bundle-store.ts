import { join } from 'node:path'
import { loadBundleDir } from './bundle-dir.ts'
import { BundleInvalidError } from './errors.ts'
import { exists } from '../identity/files.ts'
import type { KeyObject } from 'node:crypto'

const DIGEST = /^[0-9a-f]{64}$/

/** Where a complete bundle zip is (the agent's BundleService); throws a not-found error when the node does not hold it. */
export interface BundleZips {
  pathOf(digest: string): string
}

export interface UnpackedBundlesInit {
  dataDir: string
  fleetKey: KeyObject
  zips: BundleZips
}

/**
 * Bundles unpacked for the runtime under `<data>/runtime/bundles/<digest>/`,
 * from the zips the bundle store holds. `unpackBundle` verifies everything
 * and leaves either a whole bundle or nothing; the directory is kept, so an
 * instance still starts after its zip was evicted from the store, and it is
 * re-verified (loadBundleDir) each time an instance starts.
 */
export class UnpackedBundles {
  readonly #root: string
  readonly #fleetKey: KeyObject
  readonly #zips: BundleZips

  constructor (init: UnpackedBundlesInit) {
    this.#root = join(init.dataDir, 'runtime', 'bundles')
    this.#fleetKey = init.fleetKey
    this.#zips = init.zips
  }

  dirOf (digest: string): string {
    if (!DIGEST.test(digest)) throw new BundleInvalidError(`bundle: "${digest}" is not a bundle digest (64 hex digits)`, 'bundle')
    return join(this.#root, digest)
  }

  /** The unpacked directory of a bundle this node holds, unpacking it first if needed. */
  async get (digest: string): Promise<string> {
    const dir = this.dirOf(digest)
    if (await exists(dir)) return dir
    const zip = this.#zips.pathOf(digest)
    try {
      // the bundle format (zip libraries and all) loads with the first bundle, not with the agent
      const { unpackBundle } = await import('../../packaging/bundle/index.ts')
      await unpackBundle(zip, dir, { fleetPublicKey: this.#fleetKey, digest })
    } catch (err: any) {
      // a concurrent start of the same bundle got there first
      if (err.code !== 'EEXIST') throw new BundleInvalidError(`bundle: ${err.message}`, err.entry ?? 'bundle', { cause: err })
    }
    return dir
  }

  /** Verify a bundle directory (signature and every file) and read it. */
  async load (digest: string): Promise<ReturnType<typeof loadBundleDir>> {
    return await loadBundleDir(await this.get(digest), this.#fleetKey)
  }
}
