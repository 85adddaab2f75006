import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { BundleNotFoundError } from '../../node/bundles/errors.ts'
import type { BundleZips } from '../../node/runtime/bundle-store.ts'

/** Bundle zips by digest, standing in for the agent's bundle store in tests that run the runtime alone. */
export class ZipShelf implements BundleZips {
  readonly #paths = new Map<string, string>()

  async add (path: string): Promise<string> {
    const digest = createHash('sha256').update(await readFile(path)).digest('hex')
    this.#paths.set(digest, path)
    return digest
  }

  pathOf (digest: string): string {
    const path = this.#paths.get(digest)
    if (path == null) throw new BundleNotFoundError(`bundle ${digest} is not held here`)
    return path
  }
}
