import { parseArgs } from 'node:util'
import { peerIdFromString } from '@libp2p/peer-id'
import { revocationKey, type Revocation } from '../../protocols/registry/revocation.ts'
import { readPrivateKey } from '../../packaging/trust.ts'
import { AGENT_OPTIONS, AgentClient } from './agent-client.ts'
import { requireArg } from './args.ts'
import { call } from './deploy.ts'
import { UsageError } from './errors.ts'
import { authorizeThrough } from './fleet-write.ts'
import { table } from './table.ts'

export const REVOKE_USAGE = 'gatemesh revoke PEERID ... --key FLEETKEY [--reason TEXT] [--api URL | --data DIR] [--token-file FILE] · gatemesh revoke --list [--api URL | --data DIR]'

const options = {
  ...AGENT_OPTIONS,
  key: { type: 'string' },
  reason: { type: 'string' },
  list: { type: 'boolean' },
  json: { type: 'boolean' }
} as const

/**
 * Revoke nodes for good: sign `revoked/<peerId>` with the fleet key (a
 * publisher key will not do) and hand it to any agent, which writes it to
 * the mesh. Every agent then cuts the node off and drops what it wrote.
 */
export async function revokeCommand (argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options })
  if (values.list === true) {
    const client = await AgentClient.from(values, { reading: true })
    const { revocations } = await call(client, 'GET', '/v1/revocations') as { revocations: Array<Revocation & { peerId: string }> }
    if (values.json === true) {
      console.log(JSON.stringify(revocations, null, 2))
      return
    }
    console.log(table(['PEER', 'REVOKED', 'BY', 'REASON'], revocations.map(r => [r.peerId, new Date(r.revokedAt).toISOString(), r.by, r.reason])))
    return
  }
  if (positionals.length === 0) throw new UsageError('missing peer id')
  for (const peer of positionals) {
    try {
      peerIdFromString(peer)
    } catch {
      throw new UsageError(`"${peer}" is not a peer id`)
    }
  }
  const key = await readPrivateKey(requireArg(values.key, '--key FLEETKEY (the fleet\'s private key: only it may revoke)'))
  const client = await AgentClient.from(values)
  for (const peer of positionals) {
    const record: Revocation = { reason: values.reason ?? '', revokedAt: Date.now(), by: 'cli' }
    const auth = await authorizeThrough(async (m, p, b) => await call(client, m, p, b), revocationKey(peer), JSON.stringify(record), { key })
    await call(client, 'PUT', `/v1/registry/${revocationKey(peer)}`, { value: record, auth })
    console.log(`${peer} revoked: every agent cuts it off and drops what it wrote`)
  }
}
