import { readFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { DATA_DIR } from '../../packaging/image/layout.ts'
import { RUNTIME_FILE, type RuntimeInfo } from '../agent.ts'
import { API_TOKEN_ENV, isApiToken, readApiToken } from '../identity/api-token.ts'
import { ApiError, UsageError } from './errors.ts'

export const DEFAULT_API = 'http://127.0.0.1:7401'

/** The flags every command that talks to an agent takes. */
export const AGENT_OPTIONS = {
  api: { type: 'string' },
  data: { type: 'string' },
  'token-file': { type: 'string' }
} as const

export interface AgentTarget {
  api?: string | undefined
  data?: string | undefined
  'token-file'?: string | undefined
}

/** Where the agent answers: `--api`, else the node directory's agent.json, else $GATEMESH_API, else 127.0.0.1:7401. */
export async function resolveApi (values: AgentTarget): Promise<string> {
  if (values.api != null) return values.api
  if (values.data != null) {
    const path = join(resolve(values.data), RUNTIME_FILE)
    const info = JSON.parse(await readFile(path, 'utf8').catch((err: any) => {
      throw new UsageError(`--data: no running agent recorded in ${path} (${err.code ?? err.message})`)
    })) as RuntimeInfo
    return info.api
  }
  return process.env.GATEMESH_API ?? DEFAULT_API
}

/**
 * The agent's API token: `--token-file`, else the node directory's
 * api.token (`--data`), else $GATEMESH_API_TOKEN, else the token of an
 * installed image's node directory when this user may read it. Undefined
 * when there is none: reads work without it, changes are refused.
 */
export async function resolveToken (values: AgentTarget): Promise<string | undefined> {
  const file = values['token-file']
  if (file != null) {
    const text = (await readFile(resolve(file), 'utf8').catch((err: any) => { throw new UsageError(`--token-file: cannot read ${file}: ${err.code ?? err.message}`) })).trim()
    if (!isApiToken(text)) throw new UsageError(`--token-file: ${file} does not hold an API token (gma_…)`)
    return text
  }
  if (values.data != null) return await readApiToken(resolve(values.data))
  const env = process.env[API_TOKEN_ENV]
  if (env != null && env !== '') {
    if (!isApiToken(env)) throw new UsageError(`${API_TOKEN_ENV}: not an API token (gma_…)`)
    return env
  }
  return await readApiToken(DATA_DIR).catch(() => undefined)
}

/** An agent's HTTP API, with its token when the caller has one. */
export class AgentClient {
  readonly api: string
  readonly #token: string | undefined

  constructor (api: string, token: string | undefined) {
    this.api = api
    this.#token = token
  }

  /** `reading`: the command only reads, so a token that cannot be read is no reason to stop. */
  static async from (values: AgentTarget, options: { reading?: boolean } = {}): Promise<AgentClient> {
    const token = options.reading === true ? await resolveToken(values).catch(() => undefined) : await resolveToken(values)
    return new AgentClient(await resolveApi(values), token)
  }

  /** Send a request; JSON bodies are encoded, Buffers and streams sent as they are. Throws ApiError for 4xx/5xx. */
  async request<T = any> (method: string, path: string, init: { json?: unknown, body?: RequestInit['body'], headers?: Record<string, string>, timeoutMs?: number } = {}): Promise<{ status: number, body: T }> {
    const headers: Record<string, string> = { ...init.headers }
    if (this.#token != null) headers.authorization = `Bearer ${this.#token}`
    if (init.json !== undefined) headers['content-type'] = 'application/json'
    let res: Response
    try {
      res = await fetch(new URL(path, this.api), {
        method,
        headers,
        body: init.json !== undefined ? JSON.stringify(init.json) : init.body,
        signal: AbortSignal.timeout(init.timeoutMs ?? 10_000),
        ...(init.body != null && typeof (init.body as any).pipe === 'function' ? { duplex: 'half' } : {})
      } as RequestInit)
    } catch (err: any) {
      throw new Error(`cannot reach the agent at ${this.api}: ${err.cause?.code ?? err.message}`, { cause: err })
    }
    const body = await res.json().catch(() => ({})) as T
    if (!res.ok) {
      const error = body as { code?: string, message?: string, entry?: string }
      if (res.status === 401) {
        const how = this.#token == null ? `; give the node's API token with --data DIR (the node directory), --token-file FILE or ${API_TOKEN_ENV}` : ''
        throw new ApiError(401, { code: error.code ?? 'ERR_UNAUTHENTICATED', message: `${error.message ?? 'the agent wants its API token'}${how}` })
      }
      throw new ApiError(res.status, error)
    }
    return { status: res.status, body }
  }
}
