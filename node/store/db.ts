import { join } from 'node:path'
import { Level } from 'level'

export type Database = Level<string, unknown>

/** The agent's LevelDB under `<dataDir>/db`; subsystems take sublevels of it. */
export async function openDatabase (dataDir: string): Promise<Database> {
  // LevelDB defaults (4 MiB memtable, 8 MiB block cache) suit a server; the
  // agent's working set is a few thousand small entries held in memory anyway
  const db = new Level<string, unknown>(join(dataDir, 'db'), { valueEncoding: 'json', writeBufferSize: 512 * 1024, cacheSize: 1024 * 1024 })
  await db.open()
  return db
}
