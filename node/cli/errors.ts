/** Bad command line: unknown command, missing argument, malformed flag. */
export class UsageError extends Error {
  readonly code = 'ERR_USAGE'
  override readonly name = 'UsageError'
}

/** The agent answered with an error body; keeps its code so scripts can tell failures apart. */
export class ApiError extends Error {
  override readonly name = 'ApiError'
  readonly code: string
  readonly status: number

  constructor (status: number, body: { code?: string, message?: string, entry?: string }) {
    const message = body.message ?? `the agent answered ${status}`
    // bundle errors name the archive entry at fault
    super(body.entry != null && !message.includes(body.entry) ? `${message} (entry ${body.entry})` : message)
    this.status = status
    this.code = body.code ?? 'ERR_API'
  }
}
