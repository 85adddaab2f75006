import { chmod, readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { compile, describeError } from '../../protocols/schema.ts'
import { checkDevices } from './devices.ts'
import { isLoopbackHostname } from './loopback.ts'
import { ConfigSchema, type Config } from './schema.ts'

export const CONFIG_FILE = 'config.json'

/** The configuration is invalid; `field` names the offending path, e.g. `config.api.port`. */
export class ConfigError extends Error {
  readonly code = 'ERR_CONFIG'
  override readonly name = 'ConfigError'
  readonly field: string

  constructor (message: string, field: string, options?: ErrorOptions) {
    super(message, options)
    this.field = field
  }
}

const validate = compile(ConfigSchema)

function checkMultiaddrs (list: string[], field: string, needPeerId: boolean): void {
  list.forEach((addr, i) => {
    const where = `${field}[${i}]`
    let ma
    try {
      ma = multiaddr(addr)
    } catch (err) {
      throw new ConfigError(`${where}: "${addr}" is not a multiaddr`, where, { cause: err })
    }
    if (needPeerId && ma.getComponents().find(c => c.name === 'p2p') == null) {
      throw new ConfigError(`${where}: "${addr}" must end in /p2p/<peerId>`, where)
    }
  })
}

/** Fields of the heartbeat-based membership, replaced by SWIM probing. */
const RETIRED_MEMBERSHIP_FIELDS: Record<string, string> = {
  heartbeatIntervalMs: 'probeIntervalMs',
  suspectAfterMisses: 'probeTimeoutMs and suspicionMult',
  deadAfterMisses: 'suspicionMult and suspicionMaxMult'
}

function checkRetiredFields (value: Record<string, unknown>): void {
  const membership = value.membership
  if (membership == null || typeof membership !== 'object') return
  for (const [field, replacement] of Object.entries(RETIRED_MEMBERSHIP_FIELDS)) {
    if (field in membership) {
      throw new ConfigError(`config.membership.${field}: no longer exists (heartbeats were replaced by SWIM probing); use ${replacement}`, `config.membership.${field}`)
    }
  }
}

/** Validate a parsed config object, filling defaults. Throws ConfigError naming the field. */
export function parseConfig (input: unknown): Config {
  if (input == null || typeof input !== 'object' || Array.isArray(input)) {
    throw new ConfigError('config: must be a JSON object', 'config')
  }
  const value = structuredClone(input)
  checkDevices(value as Record<string, unknown>)
  checkRetiredFields(value as Record<string, unknown>)
  if (!validate(value)) {
    const { field, message } = describeError('config', validate.errors)
    throw new ConfigError(message, field)
  }
  checkMultiaddrs(value.listen, 'config.listen', false)
  checkMultiaddrs(value.announce, 'config.announce', false)
  checkMultiaddrs(value.bootstrap, 'config.bootstrap', true)
  if (!isLoopbackHostname(value.api.host) && value.api.tls == null) {
    throw new ConfigError(`config.api.host: "${value.api.host}" is not a loopback address; the agent API may listen beyond this machine only with config.api.tls (a certificate and key), and then every route but /healthz needs the node's API token. Use 127.0.0.1, or set config.api.tls`, 'config.api.host')
  }
  // the gRPC API asks for no token: it is for this machine's clients only
  if (value.grpc.enabled && !isLoopbackHostname(value.grpc.host)) {
    throw new ConfigError(`config.grpc.host: "${value.grpc.host}" is not a loopback address; the agent's gRPC API checks no token, so it listens on this machine only (127.0.0.1 or ::1)`, 'config.grpc.host')
  }
  if (value.registry.retentionMs < 10 * value.registry.maxClockDriftMs) {
    // clocks may disagree by up to the drift limit: the retention must dwarf it, or nodes would disagree on what expired
    throw new ConfigError(`config.registry.retentionMs: ${value.registry.retentionMs} must be at least 10 × registry.maxClockDriftMs (${10 * value.registry.maxClockDriftMs})`, 'config.registry.retentionMs')
  }
  if (value.membership.probeTimeoutMs >= value.membership.probeIntervalMs) {
    throw new ConfigError('config.membership.probeTimeoutMs: must be shorter than probeIntervalMs', 'config.membership.probeTimeoutMs')
  }
  return { ...value, labels: value.labels ?? {} }
}

export async function loadConfig (dir: string): Promise<Config> {
  const path = join(dir, CONFIG_FILE)
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err: any) {
    throw new ConfigError(`config: cannot read ${path}: ${err.code ?? err.message}`, 'config', { cause: err })
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (err: any) {
    throw new ConfigError(`config: ${path} is not valid JSON: ${err.message}`, 'config', { cause: err })
  }
  return parseConfig(json)
}

/**
 * Validate and write `config.json`, mode 0600: it may hold SMTP passwords,
 * SMS gateway tokens and MQTT credentials. Written beside and renamed over,
 * so a reader never sees half a file and the mode holds from the first byte.
 */
export async function writeConfig (dir: string, config: unknown): Promise<Config> {
  const parsed = parseConfig(config)
  const path = join(dir, CONFIG_FILE)
  await writeFile(`${path}.tmp`, JSON.stringify(config, null, 2) + '\n', { mode: 0o600 })
  // `mode` applies only to a new file: a .tmp left by an interrupted write keeps its old one
  await chmod(`${path}.tmp`, 0o600)
  await rename(`${path}.tmp`, path)
  return parsed
}
