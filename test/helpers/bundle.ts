import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { CompactSign } from 'jose'
import { sha256Hex } from '../../packaging/trust.ts'
import { TYP_BUNDLE_MANIFEST } from '../../node/runtime/bundle-dir.ts'
import type { Manifest, TensorSpec } from '../../packaging/manifest.ts'
import type { KeyObject } from 'node:crypto'

export interface BundleDirOptions {
  name: string
  version?: string
  format?: 'layers' | 'graph'
  inputs: TensorSpec[]
  outputs: TensorSpec[]
  /** the bundle's config.json (instance defaults) */
  config?: unknown
  /** source of the action script */
  action?: string
  /** signing key: the fleet's (the default in tests) */
  key: KeyObject
}

/**
 * Write a signed, unpacked bundle around model files already in `dir`
 * (`model.json` + weights): config.json, an optional action script,
 * manifest.json listing every file with size and sha256, and manifest.jws,
 * a detached compact JWS by the fleet key over the manifest bytes.
 */
export async function writeBundleDir (dir: string, modelFiles: string[], options: BundleDirOptions): Promise<Manifest> {
  await mkdir(dir, { recursive: true })
  const files = [...modelFiles]
  if (options.config !== undefined) {
    await writeFile(join(dir, 'config.json'), JSON.stringify(options.config, null, 2))
    files.push('config.json')
  }
  if (options.action != null) {
    await writeFile(join(dir, 'action.js'), options.action)
    files.push('action.js')
  }
  const entries = await Promise.all(files.map(async path => {
    const data = await readFile(join(dir, path))
    return { path, size: data.length, sha256: sha256Hex(data) }
  }))
  const manifest: Manifest = {
    schemaVersion: 1,
    name: options.name,
    version: options.version ?? '1.0.0',
    createdAt: new Date().toISOString(),
    publisher: 'fleet',
    runtime: 'tfjs',
    model: { format: options.format ?? 'layers', entry: 'model.json' },
    inputs: options.inputs,
    outputs: options.outputs,
    ...(options.config === undefined ? {} : { config: 'config.json' }),
    ...(options.action == null ? {} : { action: 'action.js' }),
    files: entries
  }
  const bytes = Buffer.from(JSON.stringify(manifest, null, 2))
  await writeFile(join(dir, 'manifest.json'), bytes)
  const jws = await new CompactSign(bytes).setProtectedHeader({ alg: 'EdDSA', typ: TYP_BUNDLE_MANIFEST }).sign(options.key)
  const [h, , s] = jws.split('.')
  await writeFile(join(dir, 'manifest.jws'), `${h}..${s}`)
  return manifest
}
