import { join } from 'node:path'
import { chmod, stat } from 'node:fs/promises'
import { parsePublicKey } from '../../packaging/trust.ts'
import { CONFIG_FILE, loadConfig, parseConfig, writeConfig } from '../config/config.ts'
import { API_TOKEN_FILE, createApiToken } from './api-token.ts'
import { issueNodeCertificate, type Role } from './certificate.ts'
import { loadFleet } from './fleet.ts'
import { AlreadyInitializedError } from './errors.ts'
import { ensureDir, exists, readRequired, writePublic, writeSecret } from './files.ts'
import { createPeerKey, loadPeerKey, PEER_KEY_FILE } from './peer-key.ts'
import type { Config } from '../config/schema.ts'
import type { PeerId, PrivateKey } from '@libp2p/interface'
import type { KeyObject } from 'node:crypto'

/** Files of a ready-to-run node directory. */
export const NODE_FILES = {
  certificate: 'node.cert',
  fleetPublicKey: 'fleet.pub',
  networkKey: 'network.key'
} as const

export interface NodeInitOptions {
  fleetDir: string
  role: Role
  labels?: Record<string, string>
  listen?: string[]
  apiPort?: number
  apiHost?: string
  bootstrap?: string[]
  /** Extra config fields merged over the defaults (tests, benchmarks). */
  config?: Record<string, unknown>
  validDays?: number
}

/**
 * Write a ready-to-run node directory: a fresh libp2p identity, a
 * certificate for it signed by the fleet key, the fleet public key, the
 * network key, the local API token and a validated `config.json`.
 */
export async function initNodeDir (dir: string, options: NodeInitOptions): Promise<{ peerId: string, config: Config }> {
  if (await exists(join(dir, NODE_FILES.certificate))) throw new AlreadyInitializedError(`${dir} already holds a node`)
  const fleet = await loadFleet(options.fleetDir)
  const config = {
    role: options.role,
    labels: options.labels ?? {},
    listen: options.listen ?? ['/ip4/0.0.0.0/tcp/7400'],
    bootstrap: options.bootstrap ?? [],
    api: { host: options.apiHost ?? '127.0.0.1', port: options.apiPort ?? 7401 },
    ...options.config
  }
  // validate before writing anything so a bad flag leaves nothing behind
  parseConfig(config)
  await ensureDir(dir)
  const { peerId } = await createPeerKey(dir)
  const cert = await issueNodeCertificate(fleet.privateKey, {
    peerId: peerId.toString(),
    role: options.role,
    labels: options.labels ?? {},
    fleetId: fleet.fleetId,
    ...(options.validDays == null ? {} : { validDays: options.validDays })
  })
  await writePublic(join(dir, NODE_FILES.certificate), cert)
  await writePublic(join(dir, NODE_FILES.fleetPublicKey), fleet.publicKeyPem)
  await writeSecret(join(dir, NODE_FILES.networkKey), fleet.networkKey)
  await createApiToken(dir)
  return { peerId: peerId.toString(), config: await writeConfig(dir, config) }
}

/** Files of a node directory that hold secrets (keys, tokens, credentials in the config): 0600, always. */
export const SECRET_FILES = [PEER_KEY_FILE, NODE_FILES.networkKey, API_TOKEN_FILE, CONFIG_FILE, 'enroll.json'] as const

/**
 * Narrow any secret file of `dir` that others may read to 0600 (a copy
 * made with `cp`, an archive unpacked by hand) and say which ones were.
 */
export async function tightenSecretModes (dir: string): Promise<Array<{ file: string, mode: string }>> {
  const fixed: Array<{ file: string, mode: string }> = []
  for (const file of SECRET_FILES) {
    const path = join(dir, file)
    const mode = await stat(path).then(s => s.mode & 0o777, () => undefined)
    if (mode == null || (mode & 0o077) === 0) continue
    await chmod(path, 0o600)
    fixed.push({ file, mode: mode.toString(8).padStart(4, '0') })
  }
  return fixed
}

export interface NodeIdentity {
  peerId: PeerId
  privateKey: PrivateKey
  certificate: string
  fleetPublicKey: KeyObject
  networkKey: Uint8Array
  config: Config
}

export async function loadNodeDir (dir: string): Promise<NodeIdentity> {
  const config = await loadConfig(dir)
  const { peerId, privateKey } = await loadPeerKey(dir)
  const certificate = (await readRequired(join(dir, NODE_FILES.certificate), 'node certificate')).toString('utf8').trim()
  const fleetPem = (await readRequired(join(dir, NODE_FILES.fleetPublicKey), 'fleet public key')).toString('utf8')
  const networkKey = new Uint8Array(await readRequired(join(dir, NODE_FILES.networkKey), 'network key'))
  return { peerId, privateKey, certificate, fleetPublicKey: parsePublicKey(fleetPem, join(dir, NODE_FILES.fleetPublicKey)), networkKey, config }
}
