import { generateKeyPairSync, type KeyObject } from 'node:crypto'
import { join } from 'node:path'
import { generateKey } from '@libp2p/pnet'
import { fleetIdOf, issuePublisherCert, parsePublicKey, readPrivateKey } from '../../packaging/trust.ts'
import { ensureDir, readRequired, writePublic, writeSecret } from './files.ts'

/** File names inside a fleet directory. */
export const FLEET_FILES = {
  privateKey: 'fleet.key',
  publicKey: 'fleet.pub',
  networkKey: 'network.key'
} as const

export interface FleetInfo {
  dir: string
  fleetId: string
  publicKeyPem: string
  networkKey: Uint8Array
}

export interface Fleet extends FleetInfo {
  privateKey: KeyObject
  publicKey: KeyObject
}

/** Create a fleet: Ed25519 signing key pair and a libp2p private-network key. */
export async function initFleet (dir: string): Promise<FleetInfo> {
  await ensureDir(dir)
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  const psk = new Uint8Array(95)
  generateKey(psk)
  const publicKeyPem = publicKey.export({ type: 'spki', format: 'pem' }).toString()
  await writeSecret(join(dir, FLEET_FILES.privateKey), privateKey.export({ type: 'pkcs8', format: 'pem' }).toString())
  await writeSecret(join(dir, FLEET_FILES.networkKey), psk)
  await writePublic(join(dir, FLEET_FILES.publicKey), publicKeyPem)
  return { dir, fleetId: fleetIdOf(publicKey), publicKeyPem, networkKey: psk }
}

/** Load a fleet directory including its private key (coordinator, `node init`). */
export async function loadFleet (dir: string): Promise<Fleet> {
  const privateKey = await readPrivateKey(join(dir, FLEET_FILES.privateKey))
  const publicKeyPem = (await readRequired(join(dir, FLEET_FILES.publicKey), 'fleet public key')).toString('utf8')
  const publicKey = parsePublicKey(publicKeyPem, join(dir, FLEET_FILES.publicKey))
  const networkKey = new Uint8Array(await readRequired(join(dir, FLEET_FILES.networkKey), 'network key'))
  return { dir, fleetId: fleetIdOf(publicKey), publicKeyPem, networkKey, privateKey, publicKey }
}

/**
 * Certify a publisher: a fresh Ed25519 key pair (publisher.key, 0600) and a
 * certificate by the fleet key (publisher.cert) that lets it sign bundles.
 */
export async function initPublisher (fleetDir: string, name: string, outDir: string, validDays?: number): Promise<{ certificate: string }> {
  const fleet = await loadFleet(fleetDir)
  await ensureDir(outDir)
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  const certificate = await issuePublisherCert(fleet.privateKey, name, publicKey, validDays)
  await writeSecret(join(outDir, 'publisher.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }).toString())
  await writePublic(join(outDir, 'publisher.cert'), certificate + '\n')
  return { certificate }
}
