/**
 * A raw zip writer for hostile archives that well-behaved zip libraries
 * refuse to produce: `../` names, absolute paths, symlinks, duplicate
 * names, entries whose headers lie about their size. The result is sealed
 * with a valid chunk index, as an attacker would do, so the checks under
 * test are the entry checks rather than the index.
 */
import { writeFile } from 'node:fs/promises'
import { crc32, deflateRawSync } from 'node:zlib'
import { appendChunkIndex, type WrittenZip } from '../../packaging/bundle/zip-write.ts'

export interface CraftEntry {
  name: string
  data: Uint8Array
  /** 0 store, 8 deflate @default 0 */
  method?: 0 | 8
  /** Unix mode in the upper 16 bits of the external attributes. @default 0o100644 */
  mode?: number
  /** Lie about the uncompressed size in both headers. */
  declaredSize?: number
}

export async function craftZip (path: string, entries: CraftEntry[]): Promise<WrittenZip> {
  const locals: Buffer[] = []
  const centrals: Buffer[] = []
  let offset = 0
  for (const e of entries) {
    const name = Buffer.from(e.name, 'utf8')
    const method = e.method ?? 0
    const body = method === 8 ? deflateRawSync(e.data) : Buffer.from(e.data)
    const crc = crc32(e.data)
    const size = e.declaredSize ?? e.data.byteLength
    const local = Buffer.alloc(30)
    local.writeUInt32LE(0x04034b50, 0)
    local.writeUInt16LE(20, 4)
    local.writeUInt16LE(0x800, 6)
    local.writeUInt16LE(method, 8)
    local.writeUInt32LE(crc, 14)
    local.writeUInt32LE(body.byteLength, 18)
    local.writeUInt32LE(size, 22)
    local.writeUInt16LE(name.byteLength, 26)
    locals.push(local, name, body)
    const central = Buffer.alloc(46)
    central.writeUInt32LE(0x02014b50, 0)
    central.writeUInt16LE((3 << 8) | 20, 4)
    central.writeUInt16LE(20, 6)
    central.writeUInt16LE(0x800, 8)
    central.writeUInt16LE(method, 10)
    central.writeUInt32LE(crc, 16)
    central.writeUInt32LE(body.byteLength, 20)
    central.writeUInt32LE(size, 24)
    central.writeUInt16LE(name.byteLength, 28)
    central.writeUInt32LE(((e.mode ?? 0o100644) << 16) >>> 0, 38)
    central.writeUInt32LE(offset, 42)
    centrals.push(central, name)
    offset += 30 + name.byteLength + body.byteLength
  }
  const cd = Buffer.concat(centrals)
  const eocd = Buffer.alloc(22)
  eocd.writeUInt32LE(0x06054b50, 0)
  eocd.writeUInt16LE(entries.length, 8)
  eocd.writeUInt16LE(entries.length, 10)
  eocd.writeUInt32LE(cd.byteLength, 12)
  eocd.writeUInt32LE(offset, 16)
  await writeFile(path, Buffer.concat([...locals, cd, eocd]))
  return await appendChunkIndex(path)
}
