/** Errors of signing and verification. Match on `code`. */
export class TrustError extends Error {
  readonly code: string = 'ERR_TRUST'
  override readonly name: string = 'TrustError'
}

/** The signature does not verify against the fleet key or a fleet-certified publisher. */
export class BadSignatureError extends TrustError {
  override readonly code = 'ERR_BAD_SIGNATURE'
  override readonly name = 'BadSignatureError'
}

/** The token was well signed but is expired or not yet valid. */
export class ExpiredError extends TrustError {
  override readonly code = 'ERR_EXPIRED'
  override readonly name = 'ExpiredError'
}

/** The token verifies but says something else than expected (wrong subject, key, type). */
export class ClaimMismatchError extends TrustError {
  override readonly code = 'ERR_CLAIM_MISMATCH'
  override readonly name = 'ClaimMismatchError'
}

/** A key file is missing, unreadable or not an Ed25519 key. */
export class KeyFileError extends TrustError {
  override readonly code = 'ERR_KEY_FILE'
  override readonly name = 'KeyFileError'
}
