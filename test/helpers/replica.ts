import { pino } from 'pino'
import { DEFAULT_OWNERSHIP_RULES } from '../../node/registry/acl.ts'
import { WriterQuotas } from '../../node/registry/quota.ts'
import { Replica, type ReplicaInit } from '../../node/registry/replica.ts'
import { MemoryRegistryStore } from '../../node/registry/store.ts'
import { ChangeFeed } from '../../node/registry/watch.ts'

/** A replica with no quota to speak of, nothing revoked or expired and a silent logger, but for what `init` says. */
export function testReplica (init: Partial<ReplicaInit> = {}): Replica {
  return new Replica({
    store: new MemoryRegistryStore(),
    feed: new ChangeFeed(),
    quotas: new WriterQuotas({ maxKeys: 1e9, maxBytes: 1e12 }),
    rules: DEFAULT_OWNERSHIP_RULES,
    isRevoked: () => false,
    expired: () => false,
    onRefused: () => {},
    logger: pino({ level: 'silent' }),
    ...init
  })
}
