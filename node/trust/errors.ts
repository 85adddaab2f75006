/** Errors of fleet trust at the connection level. Match on `code`. */
export class TrustError extends Error {
  readonly code: string = 'ERR_PEER_TRUST'
  override readonly name: string = 'TrustError'
}

/** The fleet revoked this peer: its certificate no longer counts. */
export class RevokedPeerError extends TrustError {
  override readonly code = 'ERR_REVOKED_PEER'
  override readonly name = 'RevokedPeerError'
}

/** A certificate for this node is not usable as its own (another peer id, another fleet, expired). */
export class OwnCertificateError extends TrustError {
  override readonly code = 'ERR_OWN_CERTIFICATE'
  override readonly name = 'OwnCertificateError'
}

/** Certificate renewal failed (no coordinator reachable, or it refused). */
export class RenewalError extends TrustError {
  override readonly code = 'ERR_CERT_RENEWAL'
  override readonly name = 'RenewalError'
}
