/**
 * Errors raised while decoding or exchanging wire messages. Match on `code`,
 * never on the message text.
 */
export class ProtocolMessageError extends Error {
  readonly code: string = 'ERR_PROTOCOL_MESSAGE'
  override readonly name: string = 'ProtocolMessageError'
}

/** The bytes are not a message of this codec at all (bad JSON, empty frame). */
export class MalformedMessageError extends ProtocolMessageError {
  override readonly code = 'ERR_MALFORMED_MESSAGE'
  override readonly name = 'MalformedMessageError'
}

/** The message is larger than the codec allows. */
export class MessageTooLargeError extends ProtocolMessageError {
  override readonly code = 'ERR_MESSAGE_TOO_LARGE'
  override readonly name = 'MessageTooLargeError'
}

/** The message nests arrays and objects deeper than the codec allows. */
export class MessageTooDeepError extends ProtocolMessageError {
  override readonly code = 'ERR_MESSAGE_TOO_DEEP'
  override readonly name = 'MessageTooDeepError'
}

/** The message carries a codec version this build does not speak. */
export class UnsupportedVersionError extends ProtocolMessageError {
  override readonly code = 'ERR_UNSUPPORTED_VERSION'
  override readonly name = 'UnsupportedVersionError'
}

/** The message decoded but does not match the schema; `field` names where. */
export class InvalidMessageError extends ProtocolMessageError {
  override readonly code = 'ERR_INVALID_MESSAGE'
  override readonly name = 'InvalidMessageError'
  readonly field: string

  constructor (message: string, field: string) {
    super(message)
    this.field = field
  }
}

/**
 * A body larger than the configured limit (a predict request past
 * `api.maxPredictBytes`): refused where it enters, never sent on.
 */
export class BodyTooLargeError extends ProtocolMessageError {
  override readonly code = 'ERR_BODY_TOO_LARGE'
  override readonly name = 'BodyTooLargeError'
  readonly field = 'body'
  readonly bytes: number
  readonly limit: number

  constructor (message: string, bytes: number, limit: number) {
    super(message)
    this.bytes = bytes
    this.limit = limit
  }
}

/** An answer larger than the asking node takes; another replica would answer the same. */
export class ReplyTooLargeError extends ProtocolMessageError {
  override readonly code = 'ERR_REPLY_TOO_LARGE'
  override readonly name = 'ReplyTooLargeError'
}

/** The answering node holds as many request bytes as it allows at once; another replica may take it. */
export class OverloadedError extends ProtocolMessageError {
  override readonly code = 'ERR_OVERLOADED'
  override readonly name = 'OverloadedError'
}

/** The remote side answered with a refusal; `remoteCode` is the code it gave. */
export class RemoteRefusedError extends ProtocolMessageError {
  override readonly code = 'ERR_REMOTE_REFUSED'
  override readonly name = 'RemoteRefusedError'
  readonly remoteCode: string

  constructor (message: string, remoteCode: string) {
    super(message)
    this.remoteCode = remoteCode
  }
}
