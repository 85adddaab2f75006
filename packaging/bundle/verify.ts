import { compile, describeError } from '../../protocols/schema.ts'
import { BUNDLE_PATH_PATTERN, LEGACY_FORMATS, ManifestSchema, RUNTIME_OF, type Manifest, type ModelFormat } from '../manifest.ts'
import { TYP_BUNDLE_MANIFEST, verifyDetached } from '../trust.ts'
import { openArchive, readEntry, readSmallEntry, resolveLimits, type BundleLimits, type CheckedEntry, type NamePattern, type OpenArchive } from './archive.ts'
import {
  ArchiveLimitError, BundleSignatureError, DuplicateEntryError, HashMismatchError, InvalidEntryNameError, InvalidManifestError, MissingEntryError, UnlistedEntryError
} from './errors.ts'
import type { ChunkIndex } from './chunk-index.ts'
import type { KeyObject } from 'node:crypto'

export const MANIFEST_FILE = 'manifest.json'
export const SIGNATURE_FILE = 'manifest.jws'
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024
const MAX_SIGNATURE_BYTES = 64 * 1024

export interface VerifyBundleOptions {
  /** The fleet's public key: the manifest must be signed by it or by a publisher it certified. */
  fleetPublicKey: KeyObject
  limits?: Partial<BundleLimits>
  /** When known (a pull by digest), the zip must hash to exactly this. */
  digest?: string
  /**
   * The pull that assembled the file checked every chunk against this
   * index, itself authenticated against `digest`: the bytes are not hashed
   * a second time. The signature and every listed file's sha256 are still
   * checked: a signed manifest does not name the zip it sits in, so only
   * the files' hashes tie these bytes to what the publisher signed.
   */
  chunksVerified?: ChunkIndex
  /** Seconds since epoch, for checking publisher certificates in tests. @default now */
  now?: number
}

/** What a verified model bundle is. */
export type VerifiedBundle = VerifiedArchive<Manifest>

const validateManifest = compile(ManifestSchema)

/** Parse and schema-check manifest bytes; InvalidManifestError names the field. */
export function parseManifest (bytes: Uint8Array): Manifest {
  let value: unknown
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes))
  } catch (err: any) {
    throw new InvalidManifestError(`manifest.json: not valid JSON: ${err.message}`, 'manifest', { cause: err })
  }
  if (!validateManifest(value)) {
    const { field, message } = describeError('manifest', validateManifest.errors)
    throw new InvalidManifestError(message, field)
  }
  const format: ModelFormat = LEGACY_FORMATS[value.model.format] ?? value.model.format as ModelFormat
  if (RUNTIME_OF[format] !== value.runtime) throw new InvalidManifestError(`manifest.runtime: a ${format} model runs on ${RUNTIME_OF[format]}, not ${value.runtime}`, 'manifest.runtime')
  const manifest: Manifest = { ...value, model: { ...value.model, format } }
  const seen = new Set<string>()
  manifest.files.forEach((f, i) => {
    if (seen.has(f.path.toLowerCase())) throw new DuplicateEntryError(`manifest.files[${i}]: ${f.path} is listed twice`, { entry: f.path })
    if (f.path === MANIFEST_FILE || f.path === SIGNATURE_FILE) throw new InvalidManifestError(`manifest.files[${i}]: ${f.path} may not list itself`, `manifest.files[${i}].path`)
    seen.add(f.path.toLowerCase())
  })
  const named: Array<[string, string | undefined]> = [['model.entry', manifest.model.entry], ['config', manifest.config], ['action', manifest.action]]
  for (const [field, path] of named) {
    if (path != null && !seen.has(path.toLowerCase())) throw new InvalidManifestError(`manifest.${field}: ${path} is not in manifest.files`, `manifest.${field}`)
  }
  return manifest
}

function requireEntry (archive: OpenArchive, name: string): CheckedEntry {
  const e = archive.entries.get(name)
  if (e == null) throw new MissingEntryError(`${name}: missing from the archive`, { entry: name })
  return e
}

/** A file a manifest lists. */
export interface ListedFile { path: string, size: number, sha256: string, mode?: number }

/**
 * One kind of signed archive in the bundle format: the `typ` its manifest
 * signature carries and how its manifest reads. Model bundles are one kind;
 * agent releases (packaging/release) are another.
 */
export interface ArchiveKind<M> {
  /** the JWS `typ` of manifest.jws */
  typ: string
  /** parse and check manifest bytes; errors name the field */
  parse: (bytes: Uint8Array) => M
  files: (manifest: M) => ListedFile[]
  /** who the manifest says published it: must be who signed it */
  publisher: (manifest: M) => string
  /** entry names this kind allows. @default BUNDLE_PATH_PATTERN */
  namePattern?: RegExp
  /** most entries an archive of this kind may hold (the tighter of this and the limits given). */
  maxEntries?: number
}

/** A verified archive of some kind. */
export interface VerifiedArchive<M> {
  /** sha256 of the zip: the bundle id */
  digest: string
  /** zip size in bytes */
  size: number
  manifest: M
  /** the exact bytes of manifest.json that were signed */
  manifestBytes: Buffer
  /** the detached JWS in manifest.jws */
  signature: string
  /** `fleet`, or the certified publisher's name */
  signer: string
  index: ChunkIndex
  /** the `typ` of its signature: which kind it is */
  typ: string
}

const MODEL_PATH_RE = new RegExp(BUNDLE_PATH_PATTERN)

/** Model bundles (packaging/manifest.ts). */
export const MODEL_BUNDLE: ArchiveKind<Manifest> = {
  typ: TYP_BUNDLE_MANIFEST,
  parse: parseManifest,
  files: m => m.files,
  publisher: m => m.publisher
}

function typOf (jws: string): string | undefined {
  try {
    const header = JSON.parse(Buffer.from(jws.split('.')[0] ?? '', 'base64url').toString('utf8')) as { typ?: unknown }
    return typeof header.typ === 'string' ? header.typ : undefined
  } catch {
    return undefined
  }
}

/**
 * The one walk over a signed archive that verify and unpack share: chunk
 * index and digest, entry structure, signature (its `typ` picks the kind
 * among `kinds`), manifest (shown to `onManifest`, which may refuse it),
 * then every listed file's size and sha256 (each passed to `sink` as it
 * streams, when given).
 */
export async function scanArchive (source: string | Uint8Array, options: VerifyBundleOptions, kinds: ReadonlyArray<ArchiveKind<any>>, sink?: (path: string, file: ListedFile) => FileSink, onManifest?: (manifest: any, signer: string) => Promise<void> | void): Promise<VerifiedArchive<unknown>> {
  const limits = resolveLimits(options.limits)
  const patterns = kinds.map(k => k.namePattern ?? MODEL_PATH_RE)
  // names are checked against every kind's pattern now, and against the one kind once the signature names it
  const union: NamePattern = patterns.length === 1 ? patterns[0]! : { test: name => patterns.some(p => p.test(name)) }
  const proven = options.chunksVerified == null || options.digest == null ? undefined : { digest: options.digest, index: options.chunksVerified }
  const archive = await openArchive(source, limits, options.digest, union, proven)
  try {
    const manifestBytes = await readSmallEntry(archive.zip, requireEntry(archive, MANIFEST_FILE), MAX_MANIFEST_BYTES)
    const signature = (await readSmallEntry(archive.zip, requireEntry(archive, SIGNATURE_FILE), MAX_SIGNATURE_BYTES)).toString('latin1')
    const typ = typOf(signature)
    const kind = kinds.find(k => k.typ === typ)
    if (kind == null) throw new BundleSignatureError(`${SIGNATURE_FILE}: signs a ${typ ?? 'thing of no type'}, not ${kinds.map(k => k.typ).join(' or ')}`, { entry: SIGNATURE_FILE })
    const pattern = kind.namePattern ?? MODEL_PATH_RE
    for (const name of archive.entries.keys()) {
      if (!pattern.test(name)) throw new InvalidEntryNameError(`${name}: not a name this kind of bundle may hold`, { entry: name })
    }
    if (kind.maxEntries != null && archive.entries.size > kind.maxEntries) {
      throw new ArchiveLimitError(`archive has ${archive.entries.size} entries, more than the ${kind.maxEntries} its kind allows`, 'maxEntries')
    }
    // the signature first: nothing in an unsigned manifest is worth reading
    let signer: string
    try {
      signer = (await verifyDetached(signature, manifestBytes, kind.typ, options.fleetPublicKey, { allowPublishers: true, ...(options.now == null ? {} : { now: options.now }) })).signer
    } catch (err: any) {
      throw new BundleSignatureError(`${SIGNATURE_FILE}: ${err.message}`, { cause: err, entry: SIGNATURE_FILE })
    }
    const manifest = kind.parse(manifestBytes)
    const publisher = kind.publisher(manifest)
    if (publisher !== signer) {
      throw new BundleSignatureError(`${SIGNATURE_FILE}: signed by ${signer}, but the manifest names publisher ${publisher}`, { entry: SIGNATURE_FILE })
    }
    // the caller's last word before any file is read (a release for another CPU stops here)
    await onManifest?.(manifest, signer)
    const files: ListedFile[] = kind.files(manifest)
    const listed = new Set(files.map(f => f.path))
    for (const name of archive.entries.keys()) {
      if (name !== MANIFEST_FILE && name !== SIGNATURE_FILE && !listed.has(name)) {
        throw new UnlistedEntryError(`${name}: in the archive but not in the manifest`, { entry: name })
      }
    }
    for (const file of files) {
      const entry = requireEntry(archive, file.path)
      const out = sink?.(file.path, file)
      try {
        const sha256 = await readEntry(archive.zip, entry, file.size, out == null ? undefined : async chunk => { await out.write(chunk) })
        if (sha256 !== file.sha256) throw new HashMismatchError(`${file.path}: sha256 ${sha256} does not match the manifest`, { entry: file.path })
        await out?.close()
      } catch (err) {
        await out?.abort()
        throw err
      }
    }
    if (sink != null) {
      for (const [name, bytes] of [[MANIFEST_FILE, manifestBytes], [SIGNATURE_FILE, Buffer.from(signature, 'latin1')]] as const) {
        const out = sink(name, { path: name, size: bytes.byteLength, sha256: '' })
        await out.write(bytes)
        await out.close()
      }
    }
    return { digest: archive.digest, size: archive.size, manifest, manifestBytes, signature, signer, index: archive.index, typ: kind.typ }
  } finally {
    archive.zip.close()
  }
}

/** The model-bundle walk (see scanArchive). */
export async function scanBundle (source: string | Uint8Array, options: VerifyBundleOptions, sink?: (path: string) => FileSink): Promise<VerifiedBundle> {
  return await scanArchive(source, options, [MODEL_BUNDLE], sink) as VerifiedBundle
}

/** Where unpacking writes one file. */
export interface FileSink {
  write(chunk: Uint8Array): Promise<void>
  close(): Promise<void>
  abort(): Promise<void>
}

/**
 * Verify a bundle without writing anything: every byte against the chunk
 * index, the signature by the fleet or a fleet-certified publisher, every
 * file's size and sha256 against the signed manifest, and the limits.
 */
export async function verifyBundle (source: string | Uint8Array, options: VerifyBundleOptions): Promise<VerifiedBundle> {
  return await scanBundle(source, options)
}
