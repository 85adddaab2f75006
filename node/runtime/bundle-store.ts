import { join } from 'node:path'
import { sha256Hex } from '../../packaging/trust.ts'
import { loadBundleDir, type LoadedBundle } from './bundle-dir.ts'
import { BundleInvalidError, BundleNotFoundError } from './errors.ts'
import { exists } from '../identity/files.ts'
import type { KeyObject } from 'node:crypto'

const DIGEST = /^[0-9a-f]{64}$/

export interface BundleStoreInit {
  dataDir: string
  fleetKey: KeyObject
}

/**
 * Bundles this node holds, unpacked under `<data>/bundles/<digest>/` (the
 * digest is the sha256 of the zip, the bundle id). A zip is verified and
 * unpacked by the bundle format's `unpackBundle`, which leaves either a
 * whole verified bundle or nothing.
 */
export class BundleStore {
  readonly #root: string
  readonly #fleetKey: KeyObject

  constructor (init: BundleStoreInit) {
    this.#root = join(init.dataDir, 'bundles')
    this.#fleetKey = init.fleetKey
  }

  dirOf (digest: string): string {
    if (!DIGEST.test(digest)) throw new BundleInvalidError(`bundle: "${digest}" is not a bundle digest (64 hex digits)`, 'bundle')
    return join(this.#root, digest)
  }

  /** Verify and unpack a bundle zip (again only if this node does not hold it yet). */
  async add (zip: Uint8Array): Promise<{ digest: string, bundle: LoadedBundle }> {
    const digest = sha256Hex(zip)
    const dir = this.dirOf(digest)
    if (!(await exists(dir))) {
      try {
        const { unpackBundle } = await import('../../packaging/bundle/index.ts')
        await unpackBundle(zip, dir, { fleetPublicKey: this.#fleetKey, digest })
      } catch (err: any) {
        // a concurrent upload of the same bundle got there first
        if (err.code !== 'EEXIST') throw new BundleInvalidError(`bundle: ${err.message}`, err.entry ?? 'bundle', { cause: err })
      }
    }
    return { digest, bundle: await loadBundleDir(dir, this.#fleetKey) }
  }

  async get (digest: string): Promise<string> {
    const dir = this.dirOf(digest)
    if (!(await exists(dir))) throw new BundleNotFoundError(`no bundle ${digest} on this node`)
    return dir
  }
}
