import { join } from 'node:path'
import { rm } from 'node:fs/promises'
import { compile, describeError } from '../../protocols/schema.ts'
import { EnrolledSchema, ENROLL_PATH, enrollmentProofMessage, joinTokenId, type Enrolled, type EnrollRole } from '../../protocols/enrollment/index.ts'
import { fleetIdOf, parsePublicKey } from '../../packaging/trust.ts'
import { ConfigError, parseConfig, writeConfig } from '../config/config.ts'
import { API_TOKEN_FILE, createApiToken } from './api-token.ts'
import { verifyNodeCertificate } from './certificate.ts'
import { AlreadyInitializedError } from './errors.ts'
import { ensureDir, exists, writePublic, writeSecret } from './files.ts'
import { NODE_FILES } from './node-dir.ts'
import { createPeerKey, loadPeerKey, PEER_KEY_FILE } from './peer-key.ts'

const validateEnrolled = compile(EnrolledSchema)

/** The coordinator refused or failed the enrollment. `status` is the HTTP status when it answered. */
export class EnrollmentFailedError extends Error {
  readonly code = 'ERR_ENROLLMENT_FAILED'
  override readonly name = 'EnrollmentFailedError'
  readonly status: number | undefined
  constructor (message: string, status?: number, options?: ErrorOptions) {
    super(message, options)
    this.status = status
  }
}

/**
 * A coordinator URL that may carry the fleet's network key: https, or http
 * to this machine only, unless `insecure`. `field` names the flag or file
 * field in the error.
 */
export function coordinatorUrl (text: string, insecure: boolean, field = '--coordinator'): URL {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    throw new ConfigError(`${field}: "${text}" is not a URL`, field)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError(`${field}: must be an http(s) URL`, field)
  const loopback = ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname)
  // the answer carries the fleet's network key: only TLS (or this machine) may see it
  if (url.protocol === 'http:' && !loopback && !insecure) throw new ConfigError(`${field}: use https:// (the response holds the fleet network key), or --insecure on a trusted network`, field)
  return url
}

/** `token` as a join token, or a ConfigError naming `field`. */
export function checkJoinToken (token: string, field = '--token'): string {
  const id = joinTokenId(token)
  if (id == null) throw new ConfigError(`${field}: not a join token (gmj_…)`, field)
  return id
}

export interface EnrollInit {
  coordinator: URL
  token: string
  role: EnrollRole
  labels: Record<string, string>
  /** config.json to write, before the coordinator's labels and bootstrap peers are merged in */
  config: Record<string, unknown>
  /** PEM of the fleet key this device was built for; an answer for another fleet is refused */
  fleetPublicKey?: string
  /** @default 30000 */
  timeoutMs?: number
  signal?: AbortSignal
}

/**
 * Enroll this device with a coordinator: make the libp2p identity here
 * (the private key never leaves the device), prove it holds it, and write a
 * ready-to-run node directory from the answer. A failed attempt can be
 * retried with the same directory: the key made the first time is reused.
 * The certificate is written last: its presence means the directory is
 * complete.
 */
export async function enrollNodeDir (dir: string, init: EnrollInit): Promise<Enrolled> {
  const tokenId = checkJoinToken(init.token)
  if (await exists(join(dir, NODE_FILES.certificate))) throw new AlreadyInitializedError(`${dir} already holds a node`)
  await ensureDir(dir)
  const { privateKey, peerId } = await exists(join(dir, PEER_KEY_FILE)) ? await loadPeerKey(dir) : await createPeerKey(dir)
  const proof = Buffer.from(await privateKey.sign(enrollmentProofMessage(tokenId, peerId.toString()))).toString('base64url')

  const timeout = AbortSignal.timeout(init.timeoutMs ?? 30_000)
  const res = await fetch(new URL(ENROLL_PATH, init.coordinator), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ token: init.token, peerId: peerId.toString(), role: init.role, labels: init.labels, proof }),
    signal: init.signal == null ? timeout : AbortSignal.any([timeout, init.signal])
  })
  const body = await res.json().catch(() => undefined) as Record<string, unknown> | undefined
  const origin = init.coordinator.origin
  if (!res.ok) throw new EnrollmentFailedError(`${origin} refused the enrollment: ${res.status} ${String(body?.message ?? res.statusText)}`, res.status)
  if (!validateEnrolled(body)) throw new EnrollmentFailedError(`the answer of ${origin} is malformed: ${describeError('response', validateEnrolled.errors).message}`, res.status)
  const enrolled: Enrolled = body
  // the certificate must name our peer id and verify against the fleet key we are about to trust
  const fleetKey = parsePublicKey(enrolled.fleetPublicKey, 'fleetPublicKey in the answer')
  if (init.fleetPublicKey != null && fleetIdOf(parsePublicKey(init.fleetPublicKey, 'pinned fleet key')) !== fleetIdOf(fleetKey)) {
    throw new ConfigError(`enroll.coordinator: ${origin} answered for fleet ${enrolled.fleetId}, not the fleet this device was built for`, 'enroll.coordinator')
  }
  await verifyNodeCertificate(enrolled.certificate, fleetKey, peerId.toString())

  const bootstrap = [...new Set([...(init.config.bootstrap as string[] | undefined ?? []), ...enrolled.bootstrap])]
  const finalConfig = { ...init.config, role: enrolled.role, labels: enrolled.labels, bootstrap }
  parseConfig(finalConfig)
  await writePublic(join(dir, NODE_FILES.fleetPublicKey), enrolled.fleetPublicKey)
  // left over by an attempt that stopped half way: this answer's key replaces it
  await rm(join(dir, NODE_FILES.networkKey), { force: true })
  await writeSecret(join(dir, NODE_FILES.networkKey), Buffer.from(enrolled.networkKey, 'base64'))
  await writeConfig(dir, finalConfig)
  if (!await exists(join(dir, API_TOKEN_FILE))) await createApiToken(dir)
  await writePublic(join(dir, NODE_FILES.certificate), enrolled.certificate)
  return enrolled
}
