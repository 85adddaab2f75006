import { stat } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { DB_DIR } from '../store/db.ts'
import { repairDatabase } from '../store/repair.ts'
import { requireArg } from './args.ts'
import { UsageError } from './errors.ts'

export const REPAIR_USAGE = 'gatemesh repair --data DIR [--force]'

/**
 * Repair the LevelDB of a stopped agent (`DIR/db`) or coordinator (`DIR/db`
 * and its embedded agent's `DIR/node/db`): what to run when the agent
 * exited saying its database is damaged.
 */
export async function repairCommand (argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { data: { type: 'string' }, force: { type: 'boolean', default: false } } })
  const dir = resolve(requireArg(values.data, '--data DIR'))
  const candidates = [join(dir, DB_DIR), join(dir, 'node', DB_DIR)]
  const found: string[] = []
  for (const path of candidates) if (await stat(path).then(s => s.isDirectory(), () => false)) found.push(path)
  if (found.length === 0) throw new UsageError(`--data: no database under ${dir} (looked for ${candidates.join(' and ')})`)
  for (const path of found) {
    const result = await repairDatabase(path, { force: values.force })
    console.log(result.state === 'healthy'
      ? `${path}: opens fine, left alone (${result.records} records; --force repairs anyway)`
      : `${path}: repaired, ${result.records} records readable (unreadable files, if any, are in ${join(path, 'lost')})`)
  }
}
