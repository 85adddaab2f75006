import { isIP } from 'node:net'

/** Whether an IP address (as a socket reports it) is this machine's loopback: 127.0.0.0/8, ::1, or either mapped into IPv6. */
export function isLoopbackAddress (address: string): boolean {
  const a = address.toLowerCase()
  if (a === '::1') return true
  const v4 = a.startsWith('::ffff:') ? a.slice(7) : a
  return isIP(v4) === 4 && v4.startsWith('127.')
}

/** Whether a host name or address names only this machine (`localhost` included). */
export function isLoopbackHostname (host: string): boolean {
  const h = host.toLowerCase().replace(/^\[(.*)\]$/, '$1')
  return h === 'localhost' || h.endsWith('.localhost') || isLoopbackAddress(h)
}
