/** Errors of loading and running models. Match on `code`, never on text. */
export class ModelFormatError extends Error {
  readonly code: string = 'ERR_MODEL_FORMAT'
  override readonly name: string = 'ModelFormatError'
}

/** The runtime a format needs cannot start on this machine (binding missing, wrong CPU). */
export class RuntimeUnavailableError extends ModelFormatError {
  override readonly code = 'ERR_RUNTIME_UNAVAILABLE'
  override readonly name = 'RuntimeUnavailableError'
}
