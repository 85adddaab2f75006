/** Errors of the membership service. Match on `code`, never on the message text. */
export class MembershipError extends Error {
  readonly code: string = 'ERR_MEMBERSHIP'
  override readonly name: string = 'MembershipError'
}

/** The peer has not proven (or cannot prove) fleet membership on its connection. */
export class UnverifiedPeerError extends MembershipError {
  override readonly code = 'ERR_UNVERIFIED_PEER'
  override readonly name = 'UnverifiedPeerError'
}

/** A member record's signature does not verify, or it names a signer outside the fleet. */
export class BadMemberRecordError extends MembershipError {
  override readonly code = 'ERR_BAD_MEMBER_RECORD'
  override readonly name = 'BadMemberRecordError'
}

/** An indirect probe's ack does not carry the target's signature for us. */
export class ForgedAckError extends MembershipError {
  override readonly code = 'ERR_FORGED_ACK'
  override readonly name = 'ForgedAckError'
}
