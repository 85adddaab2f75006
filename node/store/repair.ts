import { stat } from 'node:fs/promises'
import { Level } from 'level'
import { isDiskFull } from './disk-guard.ts'
import { DatabaseDamagedError, DatabaseLockedError, DiskFullError } from './errors.ts'

export interface RepairResult {
  path: string
  /** healthy: it opened and was left alone; repaired: LevelDB's repair ran and it opens now */
  state: 'healthy' | 'repaired'
  /** records readable afterwards */
  records: number
}

export interface RepairOptions {
  /** Run LevelDB's repair even when the database opens. @default false */
  force?: boolean
}

/**
 * LevelDB's repair (RepairDB) on the database at `path`: it rebuilds the
 * MANIFEST and CURRENT from the table and log files, keeping every record
 * it can read and moving unreadable files into `lost/`. A database that
 * opens is left alone unless `force`; one held by a running process is
 * refused, since repairing under it would destroy it.
 */
export async function repairDatabase (path: string, options: RepairOptions = {}): Promise<RepairResult> {
  if (!await stat(path).then(s => s.isDirectory(), () => false)) throw new DatabaseDamagedError(`${path} is not a database directory`, path)
  const before = await tryOpen(path)
  if (before.ok && options.force !== true) return { path, state: 'healthy', records: before.records }
  // in Node, level's Level is classic-level's ClassicLevel; its types are shared with the browser's, which has no repair
  await (Level as unknown as { repair(location: string): Promise<void> }).repair(path)
  const after = await tryOpen(path)
  if (!after.ok) {
    throw new DatabaseDamagedError(`${path} is still damaged after LevelDB's repair (${String(after.cause?.message ?? after.cause)}); move it away and start fresh`, path, { cause: after.cause })
  }
  return { path, state: 'repaired', records: after.records }
}

async function tryOpen (path: string): Promise<{ ok: true, records: number } | { ok: false, cause: any }> {
  const db = new Level<string, unknown>(path, { createIfMissing: false, valueEncoding: 'buffer' })
  try {
    await db.open()
  } catch (err: any) {
    const cause = err?.cause ?? err
    if (cause?.code === 'LEVEL_LOCKED') throw new DatabaseLockedError(`${path} is in use by a running agent or coordinator: stop it before repairing`, path, { cause })
    if (isDiskFull(cause)) throw new DiskFullError(`${path}: the disk is full; free some space before repairing`, path, { cause })
    return { ok: false, cause }
  }
  try {
    let records = 0
    for await (const _ of db.keys({ keyEncoding: 'buffer' })) records++
    return { ok: true, records }
  } finally {
    await db.close()
  }
}
