/**
 * The one rule that decides between scheduler claims, and between the
 * placements they write: the higher term wins, and of equal terms the lower
 * peer id. Election (which claim leads a zone) and placement choice (which
 * `placement/<id>/<scheduler>` agents follow) both use it, so two claims
 * with equal terms can never make a node follow one scheduler's placement
 * while another node calls the other scheduler leader.
 */
export interface TermHolder {
  term: number
  peerId: string
}

/** Negative when `a` takes precedence over `b`, positive when `b` does, 0 for the same holder. */
export function comparePrecedence (a: TermHolder, b: TermHolder): number {
  if (a.term !== b.term) return b.term - a.term
  if (a.peerId === b.peerId) return 0
  return a.peerId < b.peerId ? -1 : 1
}

/** The holder that takes precedence, or undefined for an empty list. */
export function firstInPrecedence<T extends TermHolder> (holders: Iterable<T>): T | undefined {
  let best: T | undefined
  for (const h of holders) if (best == null || comparePrecedence(h, best) < 0) best = h
  return best
}
