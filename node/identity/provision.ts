import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fleetIdOf, parsePublicKey } from '../../packaging/trust.ts'
import { ConfigError, parseConfig, writeConfig } from '../config/config.ts'
import { createApiToken } from './api-token.ts'
import { verifyNodeCertificate, type Role } from './certificate.ts'
import { checkJoinToken, coordinatorUrl } from './enroll.ts'
import { ENROLL_FILE, type EnrollFile } from './first-boot.ts'
import { ensureDir, readRequired, writePublic, writeSecret } from './files.ts'
import { FLEET_FILES } from './fleet.ts'
import { initNodeDir, loadNodeDir, NODE_FILES } from './node-dir.ts'
import { PEER_KEY_FILE } from './peer-key.ts'
import type { ImageIdentity } from '../../packaging/image/manifest.ts'

/** How a node directory for an image gets its identity. */
export type ProvisionInit = { fleetDir: string, bootstrap?: string[], config?: Record<string, unknown> } & (
  /** a fresh identity with a certificate signed by the fleet key (needs fleet.key) */
  | { mode: 'mint', role: Role, labels: Record<string, string> }
  /** an existing node directory (`gatemesh node init` or `gatemesh enroll`), checked against the fleet */
  | { mode: 'copy', nodeDir: string }
  /** no identity yet: a one-time join token the device trades for a certificate on first boot (needs only fleet.pub) */
  | { mode: 'enroll', coordinator: string, token: string, insecure?: boolean, role: 'gateway' | 'server', labels: Record<string, string> }
)

/** What a provisioned node directory holds, as the image manifest records it. */
export type Provisioned = ImageIdentity

/** Defaults of an image's config.json: reachable from the LAN, API on loopback. */
const IMAGE_CONFIG = {
  listen: ['/ip4/0.0.0.0/tcp/7400'],
  api: { host: '127.0.0.1', port: 7401 }
}

/**
 * Write the node directory an image carries into `dir`: identity and
 * certificate (baked) or a join token (enroll), the fleet public key and a
 * validated config.json and the local API token. Secrets (keys, token,
 * config) are written 0600.
 */
export async function provisionNodeDir (dir: string, init: ProvisionInit): Promise<Provisioned> {
  const fleetPem = (await readRequired(join(init.fleetDir, FLEET_FILES.publicKey), 'fleet public key')).toString('utf8')
  const fleetKey = parsePublicKey(fleetPem, join(init.fleetDir, FLEET_FILES.publicKey))
  const fleetId = fleetIdOf(fleetKey)
  const overrides = { ...(init.bootstrap == null ? {} : { bootstrap: init.bootstrap }), ...init.config }
  if (init.mode === 'mint') {
    const { peerId, config } = await initNodeDir(dir, {
      fleetDir: init.fleetDir,
      role: init.role,
      labels: init.labels,
      config: { ...IMAGE_CONFIG, ...overrides }
    })
    return { mode: 'baked', fleetId, role: config.role, labels: config.labels, peerId }
  }
  if (init.mode === 'copy') {
    const identity = await loadNodeDir(init.nodeDir)
    const claims = await verifyNodeCertificate(identity.certificate, fleetKey, identity.peerId.toString()).catch((err: Error) => {
      throw new ConfigError(`--node-dir: ${init.nodeDir}/node.cert is not a valid certificate of the fleet in ${init.fleetDir}: ${err.message}`, '--node-dir', { cause: err })
    })
    const sourceConfig = JSON.parse(await readFile(join(init.nodeDir, 'config.json'), 'utf8')) as Record<string, unknown>
    const config = { ...sourceConfig, ...overrides }
    parseConfig(config)
    await ensureDir(dir)
    await writeSecret(join(dir, PEER_KEY_FILE), await readFile(join(init.nodeDir, PEER_KEY_FILE)))
    await writeSecret(join(dir, NODE_FILES.networkKey), identity.networkKey)
    await writePublic(join(dir, NODE_FILES.fleetPublicKey), fleetPem)
    await writeConfig(dir, config)
    // the device's own token, not the source directory's: whoever holds that one does not hold this device
    await createApiToken(dir)
    await writePublic(join(dir, NODE_FILES.certificate), identity.certificate)
    return { mode: 'baked', fleetId, role: claims.role, labels: claims.labels, peerId: identity.peerId.toString() }
  }
  const url = coordinatorUrl(init.coordinator, init.insecure === true, '--enroll-url')
  checkJoinToken(init.token)
  const config = { role: init.role, labels: init.labels, bootstrap: [], ...IMAGE_CONFIG, ...overrides }
  parseConfig(config)
  const request: EnrollFile = { coordinator: url.toString(), token: init.token, role: init.role, labels: init.labels, ...(init.insecure === true ? { insecure: true } : {}) }
  await ensureDir(dir)
  // pinned: the device accepts a certificate only from this fleet, whatever the coordinator says
  await writePublic(join(dir, NODE_FILES.fleetPublicKey), fleetPem)
  await writeConfig(dir, config)
  await createApiToken(dir)
  await writeSecret(join(dir, ENROLL_FILE), JSON.stringify(request, null, 2) + '\n')
  return { mode: 'enroll', fleetId, role: init.role, labels: init.labels, coordinator: url.origin }
}
