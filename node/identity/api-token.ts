import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { chmod, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { MissingFileError } from './errors.ts'
import { writeSecret } from './files.ts'

/**
 * The node's local API token: whoever can read `<node dir>/api.token`
 * (mode 0600: the agent's user and root) may change the node's state
 * through its HTTP API. A process that merely reaches the loopback port
 * may only read.
 */
export const API_TOKEN_FILE = 'api.token'

/** The environment variable the CLI takes a token from when no node directory is given. */
export const API_TOKEN_ENV = 'GATEMESH_API_TOKEN'

const PREFIX = 'gma_'
const TOKEN_PATTERN = /^gma_[A-Za-z0-9_-]{43}$/

/** A fresh token: 256 random bits. */
export function newApiToken (): string {
  return PREFIX + randomBytes(32).toString('base64url')
}

export function isApiToken (text: string): boolean {
  return TOKEN_PATTERN.test(text)
}

/** Write a new token into `dir` (0600); refuses to overwrite one. */
export async function createApiToken (dir: string): Promise<string> {
  const token = newApiToken()
  await writeSecret(join(dir, API_TOKEN_FILE), token + '\n')
  return token
}

/** The token of `dir`, or a MissingFileError naming the file. */
export async function readApiToken (dir: string): Promise<string> {
  const path = join(dir, API_TOKEN_FILE)
  let text: string
  try {
    text = (await readFile(path, 'utf8')).trim()
  } catch (err: any) {
    if (err.code === 'ENOENT') throw new MissingFileError(`no API token at ${path} (the agent creates it on its first start)`, { cause: err })
    // EACCES: the caller is neither the agent's user nor root
    throw new MissingFileError(`cannot read the API token at ${path}: ${err.code ?? err.message} (run as the agent's user or root)`, { cause: err })
  }
  if (!isApiToken(text)) throw new MissingFileError(`${path} does not hold an API token (gma_…)`)
  return text
}

/**
 * The token of `dir`, made on first use: node directories written before
 * tokens existed get one at the agent's next start. A token file that
 * others may read is narrowed to 0600.
 */
export async function ensureApiToken (dir: string): Promise<string> {
  const path = join(dir, API_TOKEN_FILE)
  let mode: number
  try {
    mode = (await stat(path)).mode
  } catch (err: any) {
    if (err.code !== 'ENOENT') throw err
    return await createApiToken(dir)
  }
  if ((mode & 0o077) !== 0) await chmod(path, 0o600)
  return await readApiToken(dir)
}

/**
 * Compares presented tokens with the node's in constant time (over their
 * sha256, so a wrong length leaks nothing either).
 */
export class ApiTokenCheck {
  readonly #digest: Buffer

  constructor (token: string) {
    this.#digest = createHash('sha256').update(token).digest()
  }

  matches (presented: string): boolean {
    return timingSafeEqual(createHash('sha256').update(presented).digest(), this.#digest)
  }
}
