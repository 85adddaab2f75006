export { DeliveryError, PermanentDeliveryError } from '../outbox/errors.ts'

/** The action script was stopped: it ran past its time limit, or the sandbox refused something it did. */
export class ScriptError extends Error {
  readonly code: string = 'ERR_SCRIPT'
  override readonly name: string = 'ScriptError'
  /** exit code, or null when killed by a signal */
  readonly exitCode: number | null
  readonly signal: string | null
  /** the end of what the script wrote to stderr */
  readonly stderr: string

  constructor (message: string, details: { exitCode: number | null, signal: string | null, stderr: string }) {
    super(message)
    this.exitCode = details.exitCode
    this.signal = details.signal
    this.stderr = details.stderr
  }
}

export class ScriptTimeoutError extends ScriptError {
  override readonly code = 'ERR_SCRIPT_TIMEOUT'
  override readonly name = 'ScriptTimeoutError'
}

/** The script touched something the permission model forbids (a write outside its dir, a child process, an addon). */
export class ScriptSandboxError extends ScriptError {
  override readonly code = 'ERR_SCRIPT_SANDBOX'
  override readonly name = 'ScriptSandboxError'
  /** the same script would be stopped the same way again: no retries */
  readonly permanent = true
}

/** The sandbox itself could not be set up (a mount or namespace refused): not the script's fault, so retried. */
export class SandboxSetupError extends ScriptError {
  override readonly code = 'ERR_SANDBOX_SETUP'
  override readonly name = 'SandboxSetupError'
}
