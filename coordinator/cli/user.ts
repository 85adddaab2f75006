import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { requireArg } from '../../node/cli/args.ts'
import { UsageError } from '../../node/cli/errors.ts'
import { ensureDir, exists } from '../../node/identity/files.ts'
import { generatePassword } from '../auth/passwords.ts'
import { isRole, ROLES, type UserRole } from '../auth/roles.ts'
import { SessionStore } from '../auth/sessions.ts'
import { UserStore } from '../auth/users.ts'
import { COORDINATOR_FILES } from '../data-dir.ts'
import { openCoordinatorDb } from '../coordinator.ts'
import { USER_USAGE } from './usage.ts'
import type { Database } from '../../node/store/db.ts'

async function readStdin (): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '')
}

async function openDb (dataDir: string): Promise<Database> {
  // a fresh directory is fine: this is how the first admin is made before the first start
  if (!await exists(join(dataDir, COORDINATOR_FILES.node))) {
    await ensureDir(dataDir)
    console.log(`${dataDir}: new coordinator data directory`)
  }
  try {
    return await openCoordinatorDb(dataDir)
  } catch (err: any) {
    if (err.code === 'LEVEL_LOCKED' || err.cause?.code === 'LEVEL_LOCKED') {
      throw new UsageError(`the coordinator using ${dataDir} is running; use its API (POST /api/v1/users) or stop it first`)
    }
    throw err
  }
}

/**
 * `gatemesh user add` creates a user directly in a stopped coordinator's
 * database (the first admin, typically); `gatemesh user password` resets a
 * password. Without --password-stdin a strong password is generated and
 * printed once.
 */
export async function userCommand (argv: string[]): Promise<void> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      data: { type: 'string' },
      username: { type: 'string' },
      admin: { type: 'boolean' },
      role: { type: 'string', multiple: true },
      'password-stdin': { type: 'boolean' }
    }
  })
  const [sub] = positionals
  if (sub !== 'add' && sub !== 'password') throw new UsageError(`usage: ${USER_USAGE}`)
  const dataDir = resolve(requireArg(values.data, '--data DIR'))
  const username = requireArg(values.username, '--username NAME')
  const roles = [...(values.admin === true ? ['admin'] : []), ...(values.role ?? [])]
  for (const role of roles) if (!isRole(role)) throw new UsageError(`--role: "${role}" must be one of ${ROLES.join(', ')}`)
  if (sub === 'add' && roles.length === 0) throw new UsageError('give --admin or at least one --role')
  const generated = values['password-stdin'] !== true
  const password = generated ? generatePassword() : await readStdin()

  const db = await openDb(dataDir)
  try {
    const users = new UserStore(db)
    await users.open()
    if (sub === 'add') {
      const user = await users.create({ username, password, roles: roles as UserRole[] })
      console.log(`user ${user.username} created with roles ${user.roles.join(', ')}`)
    } else {
      await users.update(username, { password, ...(roles.length > 0 ? { roles: roles as UserRole[] } : {}) })
      await new SessionStore(db).revokeUser(username)
      console.log(`password of ${username} changed; their sessions are revoked`)
    }
    if (generated) console.log(`password (shown only this once): ${password}`)
  } finally {
    await db.close()
  }
}
