/** Errors of the agent's storage: its database and its disk. Match on `code`. */
export class StorageError extends Error {
  readonly code: string = 'ERR_STORAGE'
  override readonly name: string = 'StorageError'
  /** the file or directory at fault */
  readonly path: string

  constructor (message: string, path: string, options?: ErrorOptions) {
    super(message, options)
    this.path = path
  }
}

/**
 * The disk holding the data dir is full (ENOSPC, or a quota). Raised by
 * writes while the agent waits for space; nothing was written.
 */
export class DiskFullError extends StorageError {
  override readonly code = 'ERR_DISK_FULL'
  override readonly name = 'DiskFullError'
}

/** A write that would not fit in the free space (checked before writing anything). */
export class InsufficientSpaceError extends StorageError {
  override readonly code = 'ERR_INSUFFICIENT_SPACE'
  override readonly name = 'InsufficientSpaceError'
}

/** Another process (most likely another agent on the same data dir) holds the database's lock. */
export class DatabaseLockedError extends StorageError {
  override readonly code = 'ERR_DATABASE_LOCKED'
  override readonly name = 'DatabaseLockedError'
}

/** The database cannot be opened for a reason other than damage, a lock or a full disk (permissions, say). */
export class DatabaseOpenError extends StorageError {
  override readonly code = 'ERR_DATABASE_OPEN'
  override readonly name = 'DatabaseOpenError'
}

/**
 * LevelDB found its files damaged (a bad MANIFEST or CURRENT, a checksum
 * mismatch). Restarting cannot fix it: the process exits with
 * EXIT_DAMAGED_DATA and the message says what to do.
 */
export class DatabaseDamagedError extends StorageError {
  override readonly code = 'ERR_DATABASE_DAMAGED'
  override readonly name = 'DatabaseDamagedError'
  /** process exit status for `gatemesh agent` (and the systemd unit's RestartPreventExitStatus) */
  readonly exitCode = EXIT_DAMAGED_DATA
}

/**
 * Exit status of an agent or coordinator whose data needs an operator
 * (sysexits' EX_DATAERR); the image's systemd unit does not restart on it.
 */
export const EXIT_DAMAGED_DATA = 65
