import { join } from 'node:path'
import { Level } from 'level'

export type Database = Level<string, unknown>

/** The agent's LevelDB under `<dataDir>/db`; subsystems take sublevels of it. */
export async function openDatabase (dataDir: string): Promise<Database> {
  const db = new Level<string, unknown>(join(dataDir, 'db'), { valueEncoding: 'json' })
  await db.open()
  return db
}
