/**
 * k-way merge of sources that are each already sorted by `time`: yields
 * the newest (or oldest) head among them, pulling from a source only when
 * its head was taken, so nothing is read ahead of what the consumer wants.
 */
export async function * mergeByTime<T extends { time: number }> (sources: Array<AsyncIterator<T>>, order: 'asc' | 'desc'): AsyncGenerator<T> {
  const heads: Array<{ it: AsyncIterator<T>, value: T }> = []
  const first = await Promise.all(sources.map(async it => ({ it, next: await it.next() })))
  for (const { it, next } of first) if (next.done !== true) heads.push({ it, value: next.value })
  const better = order === 'desc' ? (a: T, b: T) => a.time > b.time : (a: T, b: T) => a.time < b.time
  try {
    while (heads.length > 0) {
      let best = 0
      for (let i = 1; i < heads.length; i++) if (better(heads[i]!.value, heads[best]!.value)) best = i
      const head = heads[best]!
      yield head.value
      const next = await head.it.next()
      if (next.done === true) heads.splice(best, 1)
      else head.value = next.value
    }
  } finally {
    await Promise.all(heads.map(async h => await h.it.return?.()))
  }
}
