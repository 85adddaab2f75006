import { MANIFEST_FILE, MODEL_BUNDLE, resolveLimits, scanArchive, type VerifiedArchive, type VerifyBundleOptions } from '../bundle/index.ts'
import type { Manifest } from '../manifest.ts'
import { openArchive, readSmallEntry } from '../bundle/archive.ts'
import { MissingEntryError } from '../bundle/errors.ts'
import { NotAReleaseError } from './errors.ts'
import { parseReleaseManifest, RELEASE_BUNDLE, type ReleaseManifest } from './manifest.ts'

export type VerifiedRelease = VerifiedArchive<ReleaseManifest>

/** A verified bundle of either kind, as the bundle store keeps it. */
export type VerifiedAnyBundle =
  | (VerifiedArchive<Manifest> & { kind: 'model' })
  | (VerifiedArchive<ReleaseManifest> & { kind: 'release' })

/**
 * Verify a release bundle without writing anything: every byte against
 * the chunk index, the signature (a release's, by the fleet or a
 * fleet-certified publisher), every file's size and sha256 against the
 * signed manifest, and the limits.
 */
export async function verifyRelease (source: string | Uint8Array, options: VerifyBundleOptions): Promise<VerifiedRelease> {
  return await scanArchive(source, options, [RELEASE_BUNDLE]) as VerifiedRelease
}

/** Verify a model bundle or a release, whichever its signature says it is. */
export async function verifyAnyBundle (source: string | Uint8Array, options: VerifyBundleOptions): Promise<VerifiedAnyBundle> {
  const verified = await scanArchive(source, options, [MODEL_BUNDLE, RELEASE_BUNDLE])
  return verified.typ === RELEASE_BUNDLE.typ
    ? { ...verified as VerifiedRelease, kind: 'release' }
    : { ...verified as VerifiedArchive<Manifest>, kind: 'model' }
}

/**
 * A release's manifest as its zip says, unverified: to describe a file or
 * read the Node version of a base. Nothing read here is trusted.
 */
export async function readReleaseManifest (file: string): Promise<ReleaseManifest> {
  const archive = await openArchive(file, resolveLimits(), undefined, RELEASE_BUNDLE.namePattern)
  try {
    const entry = archive.entries.get(MANIFEST_FILE)
    if (entry == null) throw new MissingEntryError(`${MANIFEST_FILE}: missing from the archive`, { entry: MANIFEST_FILE })
    const bytes = await readSmallEntry(archive.zip, entry, 4 * 1024 * 1024)
    try {
      return parseReleaseManifest(bytes)
    } catch (err: any) {
      throw new NotAReleaseError(`${file} is not a gatemesh release: ${err.message}`, { cause: err })
    }
  } finally {
    archive.zip.close()
  }
}
