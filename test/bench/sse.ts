/** Minimal Server-Sent Events reader over fetch: calls `onEvent` per `data:` payload. */
export function watchEvents (url: string, onEvent: (data: any) => void, signal: AbortSignal): Promise<void> {
  return (async () => {
    const res = await fetch(url, { signal })
    if (!res.ok || res.body == null) throw new Error(`${url}: ${res.status}`)
    const decoder = new TextDecoder()
    let buffer = ''
    for await (const chunk of res.body) {
      buffer += decoder.decode(chunk, { stream: true })
      let end
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end)
        buffer = buffer.slice(end + 2)
        const data = block.split('\n').filter(l => l.startsWith('data: ')).map(l => l.slice(6)).join('\n')
        if (data !== '') onEvent(JSON.parse(data))
      }
    }
  })().catch(err => { if (!signal.aborted) throw err })
}
