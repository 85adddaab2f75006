/** Errors of the local inference runtime. Match on `code`, never on text. */
export class RuntimeError extends Error {
  readonly code: string = 'ERR_RUNTIME'
  override readonly name: string = 'RuntimeError'
}

/** A predict request does not fit the model's input spec; `field` names the offending part. */
export class InvalidInputError extends RuntimeError {
  override readonly code = 'ERR_INVALID_INPUT'
  override readonly name = 'InvalidInputError'
  readonly field: string

  constructor (message: string, field: string) {
    super(`${field}: ${message}`)
    this.field = field
  }
}

/** No instance of that model runs here. */
export class ModelNotFoundError extends RuntimeError {
  override readonly code = 'ERR_NOT_FOUND'
  override readonly name = 'ModelNotFoundError'
}

/** An instance of that model already runs here. */
export class InstanceExistsError extends RuntimeError {
  override readonly code = 'ERR_INSTANCE_EXISTS'
  override readonly name = 'InstanceExistsError'
}

/** The instance a replacement was started for was stopped or replaced meanwhile: the replacement is not wanted. */
export class InstanceChangedError extends RuntimeError {
  override readonly code = 'ERR_INSTANCE_CHANGED'
  override readonly name = 'InstanceChangedError'
}

/** A bundle directory is incomplete, altered, unsigned or not signed by the fleet. */
export class BundleInvalidError extends RuntimeError {
  override readonly code = 'ERR_BUNDLE_INVALID'
  override readonly name = 'BundleInvalidError'
  readonly field: string | undefined

  constructor (message: string, field?: string, options?: ErrorOptions) {
    super(message, options)
    this.field = field
  }
}

/** The instance spec (the bundle's config.json merged with the run request) is invalid. */
export class InstanceSpecError extends RuntimeError {
  override readonly code = 'ERR_INSTANCE_SPEC'
  override readonly name = 'InstanceSpecError'
  readonly field: string

  constructor (message: string, field: string, options?: ErrorOptions) {
    super(message, options)
    this.field = field
  }
}

/** The model would not load in the worker (bad topology, missing weights, no backend). */
export class ModelLoadError extends RuntimeError {
  override readonly code = 'ERR_MODEL_LOAD'
  override readonly name = 'ModelLoadError'
}

/** The worker failed while running a batch, or died under it. */
export class InferenceError extends RuntimeError {
  override readonly code = 'ERR_INFERENCE'
  override readonly name = 'InferenceError'
}

/** The instance is stopping or stopped. */
export class InstanceStoppedError extends RuntimeError {
  override readonly code = 'ERR_INSTANCE_STOPPED'
  override readonly name = 'InstanceStoppedError'
}


/** The model is still loading; `retryAfterSec` is when to ask again (HTTP 503 with Retry-After, gRPC UNAVAILABLE). */
export class ModelLoadingError extends RuntimeError {
  override readonly code = 'ERR_MODEL_LOADING'
  override readonly name = 'ModelLoadingError'
  readonly retryAfterSec: number

  constructor (message: string, retryAfterSec: number) {
    super(message)
    this.retryAfterSec = retryAfterSec
  }
}
