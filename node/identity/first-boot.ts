import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Type, type Static } from '@sinclair/typebox'
import { compile, describeError } from '../../protocols/schema.ts'
import { ConfigError, CONFIG_FILE, loadConfig } from '../config/config.ts'
import { createLogger, type Logger } from '../logs/logger.ts'
import { coordinatorUrl, checkJoinToken, enrollNodeDir, EnrollmentFailedError } from './enroll.ts'
import { exists } from './files.ts'
import { NODE_FILES } from './node-dir.ts'
import { createPeerKey, loadPeerKey, PEER_KEY_FILE } from './peer-key.ts'

/**
 * A node directory that still has to enroll holds `enroll.json` (mode 0600)
 * instead of a certificate: where the coordinator is and the one-time join
 * token. Images built with `--enroll-url` carry one.
 */
export const ENROLL_FILE = 'enroll.json'

export const EnrollFileSchema = Type.Object({
  coordinator: Type.String({ minLength: 1, maxLength: 2048 }),
  token: Type.String({ minLength: 1, maxLength: 256 }),
  role: Type.Union([Type.Literal('gateway'), Type.Literal('server')]),
  labels: Type.Record(Type.String(), Type.String()),
  /** allow plain http to a host other than this one */
  insecure: Type.Optional(Type.Boolean())
}, { additionalProperties: false })

export type EnrollFile = Static<typeof EnrollFileSchema>

const validateEnrollFile = compile(EnrollFileSchema)

export async function readEnrollFile (dir: string): Promise<EnrollFile> {
  const path = join(dir, ENROLL_FILE)
  let json: unknown
  try {
    json = JSON.parse(await readFile(path, 'utf8'))
  } catch (err: any) {
    throw new ConfigError(`enroll: ${path} is unreadable or not JSON: ${err.code ?? err.message}`, 'enroll', { cause: err })
  }
  if (!validateEnrollFile(json)) {
    const { field, message } = describeError('enroll', validateEnrollFile.errors)
    throw new ConfigError(message, field)
  }
  coordinatorUrl(json.coordinator, json.insecure === true, 'enroll.coordinator')
  checkJoinToken(json.token, 'enroll.token')
  return json
}

export interface FirstBootInit {
  /** first wait between attempts, doubled up to `maxDelayMs` (each with ±25 % jitter). @default 1000 */
  initialDelayMs?: number
  /** @default 60000 */
  maxDelayMs?: number
  /** stop waiting (SIGTERM): resolves `false` */
  signal?: AbortSignal
}

export const DEFAULT_FIRST_BOOT_DELAY_MS = 1000
export const DEFAULT_FIRST_BOOT_MAX_DELAY_MS = 60_000

/**
 * Whether another attempt can succeed: the coordinator was unreachable, too
 * slow, overloaded or answered garbage (a captive portal, a proxy). A 4xx
 * refusal means the token is spent, expired, revoked or for another role:
 * only a new token helps.
 */
export function isRetryable (err: any): boolean {
  if (err instanceof EnrollmentFailedError) {
    const s = err.status
    return s == null || s >= 500 || s === 408 || s === 429 || s === 200
  }
  // fetch's network failures (TypeError 'fetch failed' with ECONNREFUSED, ENOTFOUND, …) and timeouts
  return err?.name === 'TypeError' || err?.name === 'TimeoutError' || err?.name === 'AbortError'
}

function stopped (init: FirstBootInit): boolean {
  return init.signal?.aborted === true
}

function reasonOf (err: any): string {
  const cause = err?.cause
  if (cause?.code != null) return `${cause.code}${cause.message == null ? '' : `: ${cause.message}`}`
  return err?.message ?? String(err)
}

/**
 * First boot of an image built with an enrollment token: enroll with the
 * coordinator, store the certificate and delete the token. Until a
 * coordinator answers, retry with exponential backoff and log why. Returns
 * true when the node directory is ready to run (at once when there is
 * nothing to enroll), false when `signal` stopped it first. A refused token
 * is an EnrollmentFailedError: retrying cannot help.
 */
export async function firstBoot (dir: string, init: FirstBootInit = {}): Promise<boolean> {
  const enrollPath = join(dir, ENROLL_FILE)
  if (!await exists(enrollPath)) return true
  if (await exists(join(dir, NODE_FILES.certificate))) {
    // enrolled, but stopped before the token was deleted: it is spent anyway
    await rm(enrollPath, { force: true })
    return true
  }
  const request = await readEnrollFile(dir)
  const config = await loadConfig(dir)
  const baseConfig = JSON.parse(await readFile(join(dir, CONFIG_FILE), 'utf8')) as Record<string, unknown>
  const pinned = await exists(join(dir, NODE_FILES.fleetPublicKey)) ? await readFile(join(dir, NODE_FILES.fleetPublicKey), 'utf8') : undefined
  // the identity first, so that every line of this phase names the node it will become
  const { peerId } = await exists(join(dir, PEER_KEY_FILE)) ? await loadPeerKey(dir) : await createPeerKey(dir)
  const { logger, close } = createLogger({
    node: peerId.toString(),
    level: config.logs.level,
    dir: join(dir, 'logs'),
    maxFileBytes: config.logs.maxFileBytes,
    files: config.logs.files,
    stdout: config.logs.stdout
  })
  try {
    return await enrollWithRetries(dir, request, baseConfig, pinned, logger.child({ service: 'enroll' }), init)
  } finally {
    close()
  }
}

async function enrollWithRetries (dir: string, request: EnrollFile, config: Record<string, unknown>, pinned: string | undefined, log: Logger, init: FirstBootInit): Promise<boolean> {
  const coordinator = coordinatorUrl(request.coordinator, request.insecure === true, 'enroll.coordinator')
  const initial = init.initialDelayMs ?? DEFAULT_FIRST_BOOT_DELAY_MS
  const max = init.maxDelayMs ?? DEFAULT_FIRST_BOOT_MAX_DELAY_MS
  log.info({ coordinator: coordinator.origin, role: request.role }, 'first boot: enrolling with the coordinator')
  for (let attempt = 1; ; attempt++) {
    if (stopped(init)) return false
    try {
      const enrolled = await enrollNodeDir(dir, {
        coordinator,
        token: request.token,
        role: request.role,
        labels: request.labels,
        config,
        ...(pinned == null ? {} : { fleetPublicKey: pinned }),
        ...(init.signal == null ? {} : { signal: init.signal })
      })
      await rm(join(dir, ENROLL_FILE), { force: true })
      log.info({ coordinator: coordinator.origin, attempts: attempt, role: enrolled.role, labels: enrolled.labels, fleet: enrolled.fleetId, bootstrap: enrolled.bootstrap }, 'enrolled: certificate stored, join token deleted')
      return true
    } catch (err: any) {
      if (stopped(init)) return false
      if (!isRetryable(err)) {
        log.error({ coordinator: coordinator.origin, attempts: attempt, reason: reasonOf(err) }, 'enrollment refused: this device needs a new join token')
        // a refused token is bad configuration (exit 2): restarting the unit cannot fix it
        if (err instanceof EnrollmentFailedError) throw new ConfigError(`enroll.token: ${err.message}; this device needs a new join token`, 'enroll.token', { cause: err })
        throw err
      }
      const base = Math.min(max, initial * 2 ** Math.min(attempt - 1, 30))
      const delay = Math.round(base * (0.75 + Math.random() * 0.5))
      log.warn({ coordinator: coordinator.origin, attempt, retryInMs: delay, reason: reasonOf(err) }, 'coordinator not reachable; retrying enrollment')
      try {
        await sleep(delay, undefined, init.signal == null ? undefined : { signal: init.signal })
      } catch {
        return false
      }
    }
  }
}
