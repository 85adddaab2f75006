import type { WireEntry } from '../../protocols/registry/wire.ts'

/**
 * Order for verifying a batch: revocations first (so a revoked writer's
 * entries in the same batch are refused), then node records (they carry
 * the certificates that let the rest be verified), then everything else.
 */
function rank (e: WireEntry): number {
  return e.k.startsWith('revoked/') ? 0 : e.k.startsWith('node/') ? 1 : 2
}

export function byTrustFirst (a: WireEntry, b: WireEntry): number {
  return rank(a) - rank(b)
}
