/** Errors of the agent's bundle store and transfers. Match on `code`. */
export class BundleServiceError extends Error {
  readonly code: string = 'ERR_BUNDLE_SERVICE'
  override readonly name: string = 'BundleServiceError'
}

/** Neither held here nor being pulled. */
export class BundleNotFoundError extends BundleServiceError {
  override readonly code = 'ERR_BUNDLE_NOT_FOUND'
  override readonly name = 'BundleNotFoundError'
}

/** No peer advertised the bundle before the pull timed out. */
export class NoProvidersError extends BundleServiceError {
  override readonly code = 'ERR_NO_PROVIDERS'
  override readonly name = 'NoProvidersError'
}

/** The bundle does not fit the store budget even after evicting every unreferenced bundle. */
export class StoreFullError extends BundleServiceError {
  override readonly code = 'ERR_STORE_FULL'
  override readonly name = 'StoreFullError'
}

/** A pull ended without a usable bundle (the cause says why). */
export class TransferFailedError extends BundleServiceError {
  override readonly code = 'ERR_TRANSFER_FAILED'
  override readonly name = 'TransferFailedError'
}

/** An upload was larger than the store accepts. */
export class UploadTooLargeError extends BundleServiceError {
  override readonly code = 'ERR_UPLOAD_TOO_LARGE'
  override readonly name = 'UploadTooLargeError'
}
