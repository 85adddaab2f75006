import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { compile, describeError } from '../../protocols/schema.ts'
import { EnrolledSchema, ENROLL_PATH, enrollmentProofMessage, joinTokenId, type Enrolled } from '../../protocols/enrollment/index.ts'
import { parsePublicKey } from '../../packaging/trust.ts'
import { ConfigError, parseConfig, writeConfig } from '../config/config.ts'
import { verifyNodeCertificate } from '../identity/certificate.ts'
import { AlreadyInitializedError } from '../identity/errors.ts'
import { ensureDir, exists, writePublic, writeSecret } from '../identity/files.ts'
import { NODE_FILES } from '../identity/node-dir.ts'
import { createPeerKey, loadPeerKey, PEER_KEY_FILE } from '../identity/peer-key.ts'
import { parseLabels, parsePort, requireArg } from './args.ts'
import { UsageError } from './errors.ts'

export const ENROLL_USAGE = 'gatemesh enroll --coordinator URL --token T --data DIR [--role gateway|server] [--labels k=v,...] [--listen MULTIADDR ...] [--api-port N] [--insecure]'

const validateEnrolled = compile(EnrolledSchema)

/** The coordinator refused or failed the enrollment. */
export class EnrollmentFailedError extends Error {
  readonly code = 'ERR_ENROLLMENT_FAILED'
  override readonly name = 'EnrollmentFailedError'
}

function coordinatorUrl (text: string, insecure: boolean): URL {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    throw new UsageError(`--coordinator: "${text}" is not a URL`)
  }
  const loopback = ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname)
  // the answer carries the fleet's network key: only TLS (or this machine) may see it
  if (url.protocol === 'http:' && !loopback && !insecure) throw new UsageError('--coordinator: use https:// (the response holds the fleet network key), or --insecure on a trusted network')
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError('--coordinator: must be an http(s) URL')
  return url
}

/**
 * Enroll this device with a coordinator: make the libp2p identity here
 * (the private key never leaves the device), prove it holds it, and write a
 * ready-to-run node directory from the answer. A failed attempt can be
 * retried with the same directory: the key made the first time is reused.
 */
export async function enrollCommand (argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      coordinator: { type: 'string' },
      token: { type: 'string' },
      data: { type: 'string' },
      role: { type: 'string' },
      labels: { type: 'string' },
      listen: { type: 'string', multiple: true },
      'api-port': { type: 'string' },
      insecure: { type: 'boolean' }
    }
  })
  const url = coordinatorUrl(requireArg(values.coordinator, '--coordinator URL'), values.insecure === true)
  const token = requireArg(values.token, '--token T')
  const tokenId = joinTokenId(token)
  if (tokenId == null) throw new UsageError('--token: not a join token (gmj_…)')
  const dir = resolve(requireArg(values.data, '--data DIR'))
  const role = values.role ?? 'gateway'
  if (role !== 'gateway' && role !== 'server') throw new ConfigError(`config.role: "${role}" must be gateway or server`, 'config.role')
  const labels = parseLabels(values.labels)
  const apiPort = parsePort(values['api-port'], '--api-port')
  const config = {
    role,
    labels,
    listen: values.listen ?? ['/ip4/0.0.0.0/tcp/7400'],
    bootstrap: [] as string[],
    api: { host: '127.0.0.1', port: apiPort ?? 7401 }
  }
  // every flag is checked before anything is written or sent
  parseConfig(config)
  if (await exists(join(dir, NODE_FILES.certificate))) throw new AlreadyInitializedError(`${dir} already holds a node`)
  await ensureDir(dir)
  const { privateKey, peerId } = await exists(join(dir, PEER_KEY_FILE)) ? await loadPeerKey(dir) : await createPeerKey(dir)
  const proof = Buffer.from(await privateKey.sign(enrollmentProofMessage(tokenId, peerId.toString()))).toString('base64url')

  const res = await fetch(new URL(ENROLL_PATH, url), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ token, peerId: peerId.toString(), role, labels, proof }),
    signal: AbortSignal.timeout(30_000)
  })
  const body = await res.json().catch(() => undefined) as Record<string, unknown> | undefined
  if (!res.ok) throw new EnrollmentFailedError(`${url.origin} refused the enrollment: ${res.status} ${String(body?.message ?? res.statusText)}`)
  if (!validateEnrolled(body)) throw new EnrollmentFailedError(`the coordinator's answer is malformed: ${describeError('response', validateEnrolled.errors).message}`)
  const enrolled: Enrolled = body
  // the certificate must name our peer id and verify against the fleet key we are about to trust
  const fleetKey = parsePublicKey(enrolled.fleetPublicKey, 'fleetPublicKey in the answer')
  await verifyNodeCertificate(enrolled.certificate, fleetKey, peerId.toString())

  const finalConfig = { ...config, labels: enrolled.labels, bootstrap: enrolled.bootstrap }
  parseConfig(finalConfig)
  await writePublic(join(dir, NODE_FILES.certificate), enrolled.certificate)
  await writePublic(join(dir, NODE_FILES.fleetPublicKey), enrolled.fleetPublicKey)
  await writeSecret(join(dir, NODE_FILES.networkKey), Buffer.from(enrolled.networkKey, 'base64'))
  await writeConfig(dir, finalConfig)
  console.log(`enrolled ${peerId.toString()} as ${enrolled.role} in fleet ${enrolled.fleetId}; bootstrap ${enrolled.bootstrap.join(' ') || '(none)'}`)
  console.log(`start it with: gatemesh agent --data ${dir}`)
}
