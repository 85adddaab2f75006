import type { Arch } from './arch.ts'
import type { NativeModule } from './natives.ts'

/** What the image's node directory holds: an identity (baked) or a join token (enroll). */
export interface ImageIdentity {
  mode: 'baked' | 'enroll'
  fleetId: string
  role: string
  labels: Record<string, string>
  /** baked images only */
  peerId?: string
  /** enrollment images only: the coordinator's origin, never the token */
  coordinator?: string
}

/**
 * `/opt/gatemesh/image.json`: what an image is and holds, read by `flash`
 * and by operators. Format 1 images (before releases) put the app, modules
 * and runtime straight into /opt/gatemesh; format 2 images put them in
 * `releases/<version>` behind the loader.
 */
export interface ImageManifest {
  format: 1 | 2
  name: 'gatemesh'
  version: string
  arch: Arch
  builtAt: string
  node: { version: string, package: string, bytes: number }
  app: { file: string, bytes: number }
  modules: {
    packages: number
    bytes: number
    natives: NativeModule[]
    omitted: Array<{ name: string, reason: string }>
    /** the model runtimes fitted to the arch: bytes as installed and as shipped */
    runtimes?: Array<{ package: string, bytesBefore: number, bytesAfter: number }>
  }
  /** format 2: the release the image installs (its `current`) */
  release?: { version: string, dir: string }
  identity: ImageIdentity
  unpackedBytes: number
}

/**
 * `release.json` in every release directory: what the release is and
 * where it came from. The agent reads its own to report it.
 */
export interface ReleaseInfo {
  name: 'gatemesh'
  version: string
  arch: Arch
  /** the Node version it runs on (`node` links to `runtimes/<version>`) */
  node: string
  /** sha256 of the release bundle it was installed from; null for the one an image brought */
  digest: string | null
  /** who signed that bundle (`fleet` or a publisher); null for an image's */
  publisher: string | null
  createdAt: string
  installedAt: string
  origin: 'image' | 'release'
}
