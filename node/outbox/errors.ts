/** Errors of delivery. Match on `code`. */
export class DeliveryError extends Error {
  readonly code: string = 'ERR_DELIVERY'
  override readonly name: string = 'DeliveryError'
  /** true when retrying cannot help (rejected by the receiver, bad address, missing channel) */
  readonly permanent: boolean

  constructor (message: string, options?: ErrorOptions & { permanent?: boolean }) {
    super(message, options)
    this.permanent = options?.permanent ?? false
  }
}

/** The receiver refused for good (HTTP 4xx, SMTP 5xx, unknown actuator): straight to the dead letters. */
export class PermanentDeliveryError extends DeliveryError {
  override readonly code = 'ERR_DELIVERY_PERMANENT'
  override readonly name = 'PermanentDeliveryError'

  constructor (message: string, options?: ErrorOptions) {
    super(message, { ...options, permanent: true })
  }
}

/** No dead letter with that id. */
export class DeadLetterNotFoundError extends Error {
  readonly code = 'ERR_NOT_FOUND'
  override readonly name = 'DeadLetterNotFoundError'
}
