/** Errors of building and installing agent releases. Match on `code`. */
export class ReleaseError extends Error {
  readonly code: string = 'ERR_RELEASE'
  override readonly name: string = 'ReleaseError'
}

/** A release manifest that does not parse or says something impossible; names the field. */
export class InvalidReleaseManifestError extends ReleaseError {
  override readonly code = 'ERR_RELEASE_MANIFEST'
  override readonly name = 'InvalidReleaseManifestError'
  readonly field: string
  constructor (message: string, field: string, options?: ErrorOptions) {
    super(message, options)
    this.field = field
  }
}

/** This node cannot run the release: another CPU, or a Node runtime it neither holds nor brings. */
export class IncompatibleReleaseError extends ReleaseError {
  override readonly code = 'ERR_RELEASE_INCOMPATIBLE'
  override readonly name = 'IncompatibleReleaseError'
}

/** The releases directory is missing or not writable, or another release sits where this one goes. */
export class ReleaseInstallError extends ReleaseError {
  override readonly code = 'ERR_RELEASE_INSTALL'
  override readonly name = 'ReleaseInstallError'
}

/** The file handed over is a model bundle, not a release (or the reverse). */
export class NotAReleaseError extends ReleaseError {
  override readonly code = 'ERR_NOT_A_RELEASE'
  override readonly name = 'NotAReleaseError'
}
