import { decodeProtectedHeader } from 'jose'
import { openArchive, readSmallEntry, resolveLimits, type BundleLimits } from './archive.ts'
import { chunkCount } from './chunk-index.ts'
import { MissingEntryError } from './errors.ts'
import { MANIFEST_FILE, parseManifest, scanBundle, SIGNATURE_FILE } from './verify.ts'
import type { Manifest } from '../manifest.ts'
import type { KeyObject } from 'node:crypto'

export interface BundleInfo {
  digest: string
  size: number
  chunkSize: number
  chunks: number
  manifest: Manifest
  files: Array<{ path: string, size: number, compressedSize: number }>
  /** uncompressed bytes of every entry */
  unpackedBytes: number
  signer: {
    /** what the signature claims: `fleet`, or the subject of the embedded publisher certificate */
    claimed: string
    /** true or false when a fleet key was given; null when it was not checked */
    verified: boolean | null
    error?: { code: string, message: string, entry?: string }
  }
}

/**
 * Describe a bundle: digest, sizes, chunking, manifest and who claims to
 * have signed it. The structure is always checked; the signature and every
 * file's hash only when a fleet public key is given.
 */
export async function inspectBundle (source: string | Uint8Array, options: { fleetPublicKey?: KeyObject, limits?: Partial<BundleLimits> } = {}): Promise<BundleInfo> {
  const archive = await openArchive(source, resolveLimits(options.limits))
  let info: BundleInfo
  try {
    const need = (name: string): NonNullable<ReturnType<typeof archive.entries.get>> => {
      const e = archive.entries.get(name)
      if (e == null) throw new MissingEntryError(`${name}: missing from the archive`, { entry: name })
      return e
    }
    const manifest = parseManifest(await readSmallEntry(archive.zip, need(MANIFEST_FILE), 4 * 1024 * 1024))
    const jws = (await readSmallEntry(archive.zip, need(SIGNATURE_FILE), 64 * 1024)).toString('latin1')
    let claimed = 'unknown'
    try {
      const header = decodeProtectedHeader(jws)
      claimed = 'fleet'
      if (typeof header.gmpub === 'string') {
        const sub = JSON.parse(Buffer.from(header.gmpub.split('.')[1] ?? '', 'base64url').toString('utf8')).sub
        claimed = `publisher ${String(sub)}`
      }
    } catch {}
    const files = [...archive.entries.values()].map(e => ({ path: e.name, size: e.size, compressedSize: e.entry.compressedSize }))
    info = {
      digest: archive.digest,
      size: archive.size,
      chunkSize: archive.index.chunkSize,
      chunks: chunkCount(archive.index),
      manifest,
      files,
      unpackedBytes: files.reduce((s, f) => s + f.size, 0),
      signer: { claimed, verified: null }
    }
  } finally {
    archive.zip.close()
  }
  if (options.fleetPublicKey != null) {
    try {
      await scanBundle(source, { fleetPublicKey: options.fleetPublicKey, ...(options.limits == null ? {} : { limits: options.limits }) })
      info.signer.verified = true
    } catch (err: any) {
      info.signer.verified = false
      info.signer.error = { code: err.code ?? 'ERR_UNKNOWN', message: err.message, ...(err.entry == null ? {} : { entry: err.entry }) }
    }
  }
  return info
}
