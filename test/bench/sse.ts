export interface WatchOptions {
  /** Wait this long before reconnecting. @default 500 */
  retryMs?: number
  /** A stream that failed or ended (the agent closed it, restarted, or dropped a slow reader). */
  onClose?: (err?: Error) => void
  /** Each time the stream (re)opens: events between a close and this were missed. */
  onOpen?: () => void
}

/**
 * Minimal Server-Sent Events reader over fetch: calls `onEvent` per `data:`
 * payload. A stream the agent ends or drops ("other side closed") is opened
 * again until `signal` aborts; the promise never rejects, so a watch on a
 * busy agent cannot take the benchmark down.
 */
export async function watchEvents (url: string, onEvent: (data: any) => void, signal: AbortSignal, options: WatchOptions = {}): Promise<void> {
  while (!signal.aborted) {
    try {
      const res = await fetch(url, { signal })
      if (!res.ok || res.body == null) throw new Error(`${url}: ${res.status}`)
      options.onOpen?.()
      const decoder = new TextDecoder()
      let buffer = ''
      for await (const chunk of res.body) {
        buffer += decoder.decode(chunk, { stream: true })
        let end
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end)
          buffer = buffer.slice(end + 2)
          if (/^event: close$/m.test(block)) continue
          const data = block.split('\n').filter(l => l.startsWith('data: ')).map(l => l.slice(6)).join('\n')
          if (data !== '') onEvent(JSON.parse(data))
        }
      }
      options.onClose?.()
    } catch (err) {
      if (signal.aborted) return
      options.onClose?.(err as Error)
    }
    await new Promise(resolve => setTimeout(resolve, options.retryMs ?? 500))
  }
}
