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

/** `/opt/gatemesh/image.json`: what an image is and holds, read by `flash` and by operators. */
export interface ImageManifest {
  format: 1
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
  identity: ImageIdentity
  unpackedBytes: number
}
