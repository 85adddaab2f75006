/**
 * Errors of building, verifying and unpacking bundles. Every error that is
 * about one archive entry names it in `entry`; match on `code`, never on text.
 */
export class BundleError extends Error {
  readonly code: string = 'ERR_BUNDLE'
  override readonly name: string = 'BundleError'
  /** the archive entry at fault, when there is one */
  readonly entry?: string

  constructor (message: string, options?: ErrorOptions & { entry?: string }) {
    super(message, options)
    if (options?.entry != null) this.entry = options.entry
  }
}

/** Not a readable zip, or a zip that is not a gatemesh bundle (no chunk index). */
export class CorruptArchiveError extends BundleError {
  override readonly code = 'ERR_CORRUPT_ARCHIVE'
  override readonly name = 'CorruptArchiveError'
}

/** An entry name that would land outside the bundle directory (`../`, absolute, drive letter). */
export class PathTraversalError extends BundleError {
  override readonly code = 'ERR_PATH_TRAVERSAL'
  override readonly name = 'PathTraversalError'
}

/** An entry name outside the allowed characters, or a directory entry. */
export class InvalidEntryNameError extends BundleError {
  override readonly code = 'ERR_INVALID_ENTRY_NAME'
  override readonly name = 'InvalidEntryNameError'
}

/** A symbolic link, or any entry that is not a plain file. */
export class LinkEntryError extends BundleError {
  override readonly code = 'ERR_LINK_ENTRY'
  override readonly name = 'LinkEntryError'
}

/** The same path appears twice in the archive (or in the manifest). */
export class DuplicateEntryError extends BundleError {
  override readonly code = 'ERR_DUPLICATE_ENTRY'
  override readonly name = 'DuplicateEntryError'
}

/** An archive entry the manifest does not list. */
export class UnlistedEntryError extends BundleError {
  override readonly code = 'ERR_UNLISTED_ENTRY'
  override readonly name = 'UnlistedEntryError'
}

/** A file the manifest lists (or the bundle needs) is not in the archive. */
export class MissingEntryError extends BundleError {
  override readonly code = 'ERR_MISSING_ENTRY'
  override readonly name = 'MissingEntryError'
}

/** An entry's size differs from what the manifest (or its zip header) says. */
export class SizeMismatchError extends BundleError {
  override readonly code = 'ERR_SIZE_MISMATCH'
  override readonly name = 'SizeMismatchError'
}

/** An entry's sha256 differs from the manifest, or the archive from its chunk index or digest. */
export class HashMismatchError extends BundleError {
  override readonly code = 'ERR_HASH_MISMATCH'
  override readonly name = 'HashMismatchError'
}

/** The archive would expand past a configured limit (total bytes, entry count, compression ratio). */
export class ArchiveLimitError extends BundleError {
  override readonly code = 'ERR_ARCHIVE_LIMIT'
  override readonly name = 'ArchiveLimitError'
  /** which limit: `maxTotalBytes`, `maxEntries`, `maxCompressionRatio`, `maxEntryBytes` */
  readonly limit: string

  constructor (message: string, limit: string, options?: ErrorOptions & { entry?: string }) {
    super(message, options)
    this.limit = limit
  }
}

/** Encrypted entries or compression methods other than store and deflate. */
export class UnsupportedEntryError extends BundleError {
  override readonly code = 'ERR_UNSUPPORTED_ENTRY'
  override readonly name = 'UnsupportedEntryError'
}

/** `manifest.json` is not valid JSON or does not match the schema; `field` names where. */
export class InvalidManifestError extends BundleError {
  override readonly code = 'ERR_INVALID_MANIFEST'
  override readonly name = 'InvalidManifestError'
  readonly field: string

  constructor (message: string, field: string, options?: ErrorOptions) {
    super(message, { ...options, entry: 'manifest.json' })
    this.field = field
  }
}

/** The manifest signature is missing, or verifies but names another publisher than the manifest. */
export class BundleSignatureError extends BundleError {
  override readonly code = 'ERR_BUNDLE_SIGNATURE'
  override readonly name = 'BundleSignatureError'
}

/** `bundle build`: the model directory does not hold a TensorFlow.js model that loads. */
export class ModelLoadError extends BundleError {
  override readonly code = 'ERR_MODEL_LOAD'
  override readonly name = 'ModelLoadError'
}

/** `bundle build`: an input other than the model is unusable (config not a JSON object, unreadable action). */
export class BuildInputError extends BundleError {
  override readonly code = 'ERR_BUILD_INPUT'
  override readonly name = 'BuildInputError'
}

/** The input or output specs a user gave disagree with what the model declares; `field` names the place, e.g. `inputs[0].dtype`. */
export class ModelSpecError extends BundleError {
  override readonly code = 'ERR_MODEL_SPEC'
  override readonly name = 'ModelSpecError'
  readonly field: string

  constructor (message: string, field: string, options?: ErrorOptions) {
    super(`${field}: ${message}`, options)
    this.field = field
  }
}

/** The model check ran past its memory or time limit (a model built to exhaust the machine that checks it). */
export class ModelCheckLimitError extends BundleError {
  override readonly code = 'ERR_MODEL_CHECK_LIMIT'
  override readonly name = 'ModelCheckLimitError'
}
