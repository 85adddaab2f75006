import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto'
import { join } from 'node:path'
import { ConfigError, loadConfig, writeConfig } from '../node/config/config.ts'
import { loadFleet, type Fleet } from '../node/identity/fleet.ts'
import { ensureDir, exists, readRequired, writeSecret } from '../node/identity/files.ts'
import { loadNodeDir, initNodeDir, NODE_FILES } from '../node/identity/node-dir.ts'
import { fleetIdOf } from '../packaging/trust.ts'

/**
 * A coordinator's data directory:
 *   node/             its mesh identity: a node directory with role `coordinator`
 *   db/               level: users, sessions, API tokens, join tokens
 *   jwt.key           Ed25519 key that signs access tokens (0600)
 *   models/           the model repository: <owner>/<name>/<version>/ with the signed bundle.zip
 *   coordinator.json  where it listens, once started
 */
export const COORDINATOR_FILES = {
  node: 'node',
  jwtKey: 'jwt.key',
  models: 'models',
  runtime: 'coordinator.json'
} as const

export const DEFAULT_P2P_LISTEN = ['/ip4/0.0.0.0/tcp/7402']

export interface MeshOptions {
  /** libp2p listen addresses; applied on every start when given */
  listen?: string[]
  announce?: string[]
  bootstrap?: string[]
  /** logs of the embedded agent to stdout, at creation @default true */
  stdoutLogs?: boolean
}

/**
 * Make sure `dataDir` holds a coordinator node directory certified by the
 * fleet in `fleetDir`, creating it on first start. Mesh flags given on a
 * later start replace what the stored config says.
 */
export async function ensureNodeDir (dataDir: string, fleetDir: string, mesh: MeshOptions = {}): Promise<{ nodeDir: string, fleet: Fleet, created: boolean }> {
  await ensureDir(dataDir)
  const fleet = await loadFleet(fleetDir)
  const nodeDir = join(dataDir, COORDINATOR_FILES.node)
  let created = false
  if (!await exists(join(nodeDir, NODE_FILES.certificate))) {
    await initNodeDir(nodeDir, {
      fleetDir,
      role: 'coordinator',
      listen: mesh.listen ?? DEFAULT_P2P_LISTEN,
      bootstrap: mesh.bootstrap ?? [],
      // the embedded agent's own HTTP API stays on loopback, on any free port
      apiPort: 0,
      // the coordinator serves gRPC itself, with its users' tokens; its agent does not
      config: { announce: mesh.announce ?? [], logs: { stdout: mesh.stdoutLogs ?? true }, grpc: { enabled: false } }
    })
    created = true
  } else if (mesh.listen != null || mesh.bootstrap != null || mesh.announce != null) {
    const config = await loadConfig(nodeDir)
    await writeConfig(nodeDir, {
      ...config,
      ...(mesh.listen == null ? {} : { listen: mesh.listen }),
      ...(mesh.bootstrap == null ? {} : { bootstrap: mesh.bootstrap }),
      ...(mesh.announce == null ? {} : { announce: mesh.announce })
    })
  }
  const identity = await loadNodeDir(nodeDir)
  if (identity.config.role !== 'coordinator') throw new ConfigError(`config.role: ${nodeDir} holds a ${identity.config.role}, not a coordinator`, 'config.role')
  if (fleetIdOf(identity.fleetPublicKey) !== fleet.fleetId) {
    throw new ConfigError(`--fleet: ${fleetDir} is fleet ${fleet.fleetId}, but ${nodeDir} belongs to fleet ${fleetIdOf(identity.fleetPublicKey)}`, '--fleet')
  }
  return { nodeDir, fleet, created }
}

/** The access-token signing key: the coordinator's own, made on first start. */
export async function loadOrCreateJwtKey (dataDir: string): Promise<{ privateKey: KeyObject, publicKey: KeyObject }> {
  const path = join(dataDir, COORDINATOR_FILES.jwtKey)
  if (!await exists(path)) {
    const { privateKey } = generateKeyPairSync('ed25519')
    await writeSecret(path, privateKey.export({ type: 'pkcs8', format: 'pem' }).toString())
  }
  const privateKey = createPrivateKey(await readRequired(path, 'access-token signing key'))
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new ConfigError(`${path}: not an Ed25519 key`, 'jwt.key')
  return { privateKey, publicKey: createPublicKey(privateKey) }
}
