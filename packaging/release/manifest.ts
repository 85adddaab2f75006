import { Type, type Static } from '@sinclair/typebox'
import { compile, describeError } from '../../protocols/schema.ts'
import { MANIFEST_FILE, SIGNATURE_FILE, type ArchiveKind, type ListedFile } from '../bundle/index.ts'
import { ARCHES } from '../image/arch.ts'
import { NODE_VERSION_PATTERN, RELEASE_APP, RELEASE_NODE, RELEASE_VERSION_PATTERN } from '../image/layout.ts'
import { InvalidReleaseManifestError } from './errors.ts'

/**
 * `manifest.json` of an agent release: the app, its modules and (when it
 * changes, or when asked) the Node runtime of one architecture, in the
 * bundle format (zip, chunk index, detached JWS over the manifest), signed
 * as a release so that no model bundle can pass for one.
 */
export const TYP_RELEASE_MANIFEST = 'gatemesh-release-manifest+jws'
export const RELEASE_KIND = 'gatemesh-release'

/**
 * Paths in a release: node_modules holds scoped packages (`@tensorflow/…`)
 * and prebuilds such as `@serialport+bindings-cpp.glibc.node`, so `@` and
 * `+` are allowed; no empty, `.` or `..` segments, nothing absolute.
 */
export const RELEASE_PATH_PATTERN = '^(?!.*(^|/)\\.\\.?(/|$))(?!.*//)[A-Za-z0-9._@+-][A-Za-z0-9._@+/-]{0,254}(?<!/)$'
const PATH_RE = new RegExp(RELEASE_PATH_PATTERN)
/** What a release may carry, relative to its directory (and the runtime's, for `node/`). */
const ROOTS = ['app/', 'node_modules/']
const TOP_FILES = ['package.json']
const NODE_FILES = [RELEASE_NODE, 'node/LICENSE']
/** Most files a release lists: a bundle reader refuses archives of more entries (DEFAULT_LIMITS.maxEntries). */
export const MAX_RELEASE_FILES = 10_000

export const ReleaseFileSchema = Type.Object({
  path: Type.String({ pattern: RELEASE_PATH_PATTERN, maxLength: 255 }),
  size: Type.Integer({ minimum: 0 }),
  sha256: Type.String({ pattern: '^[0-9a-f]{64}$' }),
  /** installed executable (0755): the runtime, package scripts */
  exec: Type.Optional(Type.Literal(true))
}, { additionalProperties: false })

export const ReleaseManifestSchema = Type.Object({
  schemaVersion: Type.Literal(1),
  kind: Type.Literal(RELEASE_KIND),
  name: Type.Literal('gatemesh'),
  /** a semantic version: releases are ordered by it (downgrades need --allow-downgrade) */
  version: Type.String({ pattern: RELEASE_VERSION_PATTERN, maxLength: 64 }),
  arch: Type.Union(ARCHES.map(a => Type.Literal(a))),
  /** ISO 8601 */
  createdAt: Type.String({ minLength: 10, maxLength: 40 }),
  /** `fleet`, or the name in the signing publisher's certificate */
  publisher: Type.String({ minLength: 1, maxLength: 128 }),
  /** the Node runtime the release runs on; `included` when `node/` is in the bundle, else the node must hold it already */
  node: Type.Object({
    version: Type.String({ pattern: NODE_VERSION_PATTERN }),
    included: Type.Boolean()
  }, { additionalProperties: false }),
  /** native modules, for people reading the manifest */
  natives: Type.Array(Type.Object({
    package: Type.String({ minLength: 1, maxLength: 214 }),
    version: Type.String({ maxLength: 64 }),
    binaries: Type.Array(Type.String({ maxLength: 255 }), { maxItems: 16 }),
    origin: Type.Union([Type.Literal('prebuilt'), Type.Literal('compiled')])
  }, { additionalProperties: false }), { maxItems: 64 }),
  files: Type.Array(ReleaseFileSchema, { minItems: 1, maxItems: MAX_RELEASE_FILES })
}, { additionalProperties: false })

export type ReleaseManifest = Static<typeof ReleaseManifestSchema>
export type ReleaseFile = Static<typeof ReleaseFileSchema>

const validate = compile(ReleaseManifestSchema)

/** Parse and check release manifest bytes; InvalidReleaseManifestError names the field. */
export function parseReleaseManifest (bytes: Uint8Array): ReleaseManifest {
  let value: unknown
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes))
  } catch (err: any) {
    throw new InvalidReleaseManifestError(`manifest.json: not valid JSON: ${err.message}`, 'manifest', { cause: err })
  }
  if (!validate(value)) {
    const { field, message } = describeError('manifest', validate.errors)
    throw new InvalidReleaseManifestError(message, field)
  }
  const m = value
  const seen = new Set<string>()
  m.files.forEach((f, i) => {
    const field = `manifest.files[${i}].path`
    if (seen.has(f.path.toLowerCase())) throw new InvalidReleaseManifestError(`${field}: ${f.path} is listed twice`, field)
    seen.add(f.path.toLowerCase())
    if (f.path === MANIFEST_FILE || f.path === SIGNATURE_FILE) throw new InvalidReleaseManifestError(`${field}: ${f.path} may not list itself`, field)
    const isNode = NODE_FILES.includes(f.path)
    if (isNode && !m.node.included) throw new InvalidReleaseManifestError(`${field}: ${f.path} is a runtime file, but manifest.node.included is false`, field)
    if (!isNode && !TOP_FILES.includes(f.path) && !ROOTS.some(r => f.path.startsWith(r))) {
      throw new InvalidReleaseManifestError(`${field}: ${f.path} is outside what a release carries (${[...TOP_FILES, ...ROOTS, 'node/'].join(', ')})`, field)
    }
  })
  for (const needed of [RELEASE_APP, 'package.json', ...(m.node.included ? [RELEASE_NODE] : [])]) {
    if (!seen.has(needed.toLowerCase())) throw new InvalidReleaseManifestError(`manifest.files: ${needed} is missing`, 'manifest.files')
  }
  return m
}

/** Release bundles as one kind of signed archive (see packaging/bundle's scanArchive). */
export const RELEASE_BUNDLE: ArchiveKind<ReleaseManifest> = {
  typ: TYP_RELEASE_MANIFEST,
  parse: parseReleaseManifest,
  files: m => m.files.map((f): ListedFile => ({ path: f.path, size: f.size, sha256: f.sha256, mode: f.exec === true ? 0o755 : 0o644 })),
  publisher: m => m.publisher,
  namePattern: PATH_RE,
  maxEntries: MAX_RELEASE_FILES + 2
}
