import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { sha256Hex, TYP_BUNDLE_MANIFEST, verifyDetached } from '../../packaging/trust.ts'
import { BundleInvalidError } from './errors.ts'
import type { Manifest } from '../../packaging/manifest.ts'
import type { KeyObject } from 'node:crypto'

export interface LoadedBundle {
  dir: string
  manifest: Manifest
  /** `fleet` or the publisher that signed the manifest */
  signer: string
  /** sha256 of manifest.json, which the signature covers */
  manifestDigest: string
  /** the bundle's `config.json` (deployment defaults), `{}` when it has none */
  config: unknown
  /** absolute path of the action script, when the bundle has one */
  actionPath?: string
}

/**
 * Open an unpacked bundle directory (as `unpackBundle` leaves it) and refuse
 * it unless it is still exactly what its publisher signed: `manifest.jws`
 * verifies over the bytes of `manifest.json` against the fleet key (or a
 * fleet-certified publisher), and every file listed has its size and
 * sha256. Checked again at every start, since files on a gateway's disk can
 * change after unpacking. Nothing unsigned is ever run.
 */
export async function loadBundleDir (dir: string, fleetKey: KeyObject): Promise<LoadedBundle> {
  // the bundle format (zip libraries and all) loads with the first bundle, not with the agent
  const { MANIFEST_FILE, parseManifest, SIGNATURE_FILE } = await import('../../packaging/bundle/index.ts')
  const manifestBytes = await readPart(dir, MANIFEST_FILE)
  const jws = (await readPart(dir, SIGNATURE_FILE)).toString('utf8')
  let signer: string
  try {
    ({ signer } = await verifyDetached(jws, manifestBytes, TYP_BUNDLE_MANIFEST, fleetKey, { allowPublishers: true }))
  } catch (err: any) {
    throw new BundleInvalidError(`${SIGNATURE_FILE}: ${err.message}`, SIGNATURE_FILE, { cause: err })
  }
  let manifest: Manifest
  try {
    manifest = parseManifest(manifestBytes)
  } catch (err: any) {
    throw new BundleInvalidError(err.message, err.field ?? 'manifest', { cause: err })
  }
  const listed = new Set(manifest.files.map(f => f.path))
  for (const [field, path] of [['manifest.model.entry', manifest.model.entry], ['manifest.config', manifest.config], ['manifest.action', manifest.action]] as const) {
    if (path != null && !listed.has(path)) throw new BundleInvalidError(`${field}: ${path} is not among manifest.files`, field)
  }
  for (const [i, file] of manifest.files.entries()) {
    const data = await readPart(dir, file.path)
    if (data.length !== file.size || sha256Hex(data) !== file.sha256) {
      throw new BundleInvalidError(`manifest.files[${i}]: ${file.path} does not match its size or sha256`, `manifest.files[${i}]`)
    }
  }
  let config: unknown = {}
  if (manifest.config != null) {
    try {
      config = JSON.parse((await readPart(dir, manifest.config)).toString('utf8'))
    } catch (err) {
      throw new BundleInvalidError(`${manifest.config}: not JSON`, 'manifest.config', { cause: err })
    }
  }
  const bundle: LoadedBundle = { dir, manifest, signer, manifestDigest: sha256Hex(manifestBytes), config }
  if (manifest.action != null) bundle.actionPath = join(dir, manifest.action)
  return bundle
}

async function readPart (dir: string, path: string): Promise<Buffer> {
  try {
    return await readFile(join(dir, path))
  } catch (err: any) {
    throw new BundleInvalidError(`${path}: cannot read (${err.code ?? err.message})`, path, { cause: err })
  }
}
