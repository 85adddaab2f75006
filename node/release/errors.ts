/** Errors of releases and rollouts on the agent. Match on `code`. */
export class RolloutError extends Error {
  readonly code: string = 'ERR_ROLLOUT'
  override readonly name: string = 'RolloutError'
}

/** A rollout record is invalid; `field` names where (e.g. `rollout.waves[1]`). */
export class RolloutSpecError extends RolloutError {
  override readonly code = 'ERR_ROLLOUT_SPEC'
  override readonly name = 'RolloutSpecError'
  readonly field: string

  constructor (message: string, field: string) {
    super(message)
    this.field = field
  }
}

/** No rollout with that id. */
export class RolloutNotFoundError extends RolloutError {
  override readonly code = 'ERR_NOT_FOUND'
  override readonly name = 'RolloutNotFoundError'
}

/** The change asked for does not apply to the rollout as it stands (resume an aborted one, create over an existing id). */
export class RolloutConflictError extends RolloutError {
  override readonly code = 'ERR_ROLLOUT_CONFLICT'
  override readonly name = 'RolloutConflictError'
}
