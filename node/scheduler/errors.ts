/** Errors of deployments and scheduling. Match on `code`. */
export class SchedulerError extends Error {
  readonly code: string = 'ERR_SCHEDULER'
  override readonly name: string = 'SchedulerError'
}

/** A deployment spec is invalid; `field` names where (e.g. `deployment.window.end`). */
export class DeploymentSpecError extends SchedulerError {
  override readonly code = 'ERR_DEPLOYMENT_SPEC'
  override readonly name = 'DeploymentSpecError'
  readonly field: string

  constructor (message: string, field: string) {
    super(message)
    this.field = field
  }
}
