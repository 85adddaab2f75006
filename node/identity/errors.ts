/** Errors of the fleet and node directories. */
export class IdentityError extends Error {
  readonly code: string = 'ERR_IDENTITY'
  override readonly name: string = 'IdentityError'
}

/** Refused to overwrite existing key material. */
export class AlreadyInitializedError extends IdentityError {
  override readonly code = 'ERR_ALREADY_INITIALIZED'
  override readonly name = 'AlreadyInitializedError'
}

/** A required file of a fleet or node directory is missing or unreadable. */
export class MissingFileError extends IdentityError {
  override readonly code = 'ERR_MISSING_FILE'
  override readonly name = 'MissingFileError'
}
