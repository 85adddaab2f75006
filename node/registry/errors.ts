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

/** An entry's timestamp is further in the future than the allowed drift; `offsetMs` says by how much it is ahead. */
export class ClockDriftError extends RegistryError {
  override readonly code = 'ERR_CLOCK_DRIFT'
  override readonly name = 'ClockDriftError'
  readonly offsetMs: number

  constructor (message: string, offsetMs: number, options?: ErrorOptions) {
    super(message, options)
    this.offsetMs = offsetMs
  }
}

/** A timestamp outside the wire schema's bounds (never adopted, never stored). */
export class InvalidTimestampError extends RegistryError {
  override readonly code = 'ERR_INVALID_TIMESTAMP'
  override readonly name = 'InvalidTimestampError'
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

/** The fleet revoked the writer: nothing it wrote is trusted any more. */
export class RevokedWriterError extends RegistryError {
  override readonly code = 'ERR_REVOKED_WRITER'
  override readonly name = 'RevokedWriterError'
}

/** A value cannot be stored (not JSON, too large, nested too deep, not the shape its key needs). */
export class InvalidValueError extends RegistryError {
  override readonly code = 'ERR_INVALID_VALUE'
  override readonly name = 'InvalidValueError'
}

/** The writer is past its quota of keys, bytes or write rate; `limit` names which. */
export class QuotaExceededError extends RegistryError {
  override readonly code = 'ERR_QUOTA_EXCEEDED'
  override readonly name = 'QuotaExceededError'
  readonly limit: 'keys' | 'bytes' | 'rate'

  constructor (message: string, limit: 'keys' | 'bytes' | 'rate', options?: ErrorOptions) {
    super(message, options)
    this.limit = limit
  }
}

/** A write would lose to the entry the key already holds (e.g. a replayed authorisation). */
export class StaleWriteError extends RegistryError {
  override readonly code = 'ERR_STALE_WRITE'
  override readonly name = 'StaleWriteError'
}

/** A zone-local entry on the fleet topic, or a fleet-wide one on a zone's topic. */
export class WrongTopicError extends RegistryError {
  override readonly code = 'ERR_WRONG_TOPIC'
  override readonly name = 'WrongTopicError'
}

/** An entry for a zone its writer's certificate does not put it in (on that zone's topic, or a `zone/<zone>/…` summary). */
export class WrongZoneError extends RegistryError {
  override readonly code = 'ERR_WRONG_ZONE'
  override readonly name = 'WrongZoneError'
}

/** A zone-local entry of a zone this node and the peer that sent it do not share. */
export class OutOfZoneError extends RegistryError {
  override readonly code = 'ERR_OUT_OF_ZONE'
  override readonly name = 'OutOfZoneError'
}

/** Entries a member asked this node to relay that it does not relay: not the member's own, not health, not its zone, or this node is not its zone's scheduler. */
export class NotRelayedError extends RegistryError {
  override readonly code = 'ERR_NOT_RELAYED'
  override readonly name = 'NotRelayedError'
}
