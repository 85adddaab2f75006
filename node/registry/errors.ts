/** Errors of the registry. Match on `code`. */
export class RegistryError extends Error {
  readonly code: string = 'ERR_REGISTRY'
  override readonly name: string = 'RegistryError'
}

/** The writer may not write this key (not its own, and no valid fleet authorisation). */
export class UnauthorizedWriteError extends RegistryError {
  override readonly code = 'ERR_UNAUTHORIZED_WRITE'
  override readonly name = 'UnauthorizedWriteError'
}

/** An entry's timestamp is further in the future than the allowed drift. */
export class ClockDriftError extends RegistryError {
  override readonly code = 'ERR_CLOCK_DRIFT'
  override readonly name = 'ClockDriftError'
}

/** An entry's signature does not verify against its writer's key. */
export class BadEntrySignatureError extends RegistryError {
  override readonly code = 'ERR_BAD_ENTRY_SIGNATURE'
  override readonly name = 'BadEntrySignatureError'
}

/** The writer holds no valid certificate of this fleet. */
export class UnknownWriterError extends RegistryError {
  override readonly code = 'ERR_UNKNOWN_WRITER'
  override readonly name = 'UnknownWriterError'
}

/** A value cannot be stored (not JSON, too large). */
export class InvalidValueError extends RegistryError {
  override readonly code = 'ERR_INVALID_VALUE'
  override readonly name = 'InvalidValueError'
}
