/** Bad command line: unknown command, missing argument, malformed flag. */
export class UsageError extends Error {
  readonly code = 'ERR_USAGE'
  override readonly name = 'UsageError'
}
