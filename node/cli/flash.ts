import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { flashRoot } from '../../packaging/image/flash.ts'
import { flashSsh } from '../../packaging/image/ssh.ts'
import { requireArg } from './args.ts'
import { UsageError } from './errors.ts'

export const FLASH_USAGE = 'gatemesh flash FILE.tar.gz --root MOUNTED_ROOTFS | --ssh USER@HOST [--ssh-option ARG ...]'

/** Install an image into a mounted root filesystem, or onto a running device over ssh. */
export async function flashCommand (argv: string[]): Promise<void> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      root: { type: 'string' },
      ssh: { type: 'string' },
      'ssh-option': { type: 'string', multiple: true }
    }
  })
  const archive = resolve(requireArg(positionals[0], 'FILE.tar.gz'))
  if ((values.root == null) === (values.ssh == null)) throw new UsageError('give exactly one of --root MOUNTED_ROOTFS and --ssh USER@HOST')
  const log = (line: string): void => { console.log(line) }
  if (values.ssh != null) {
    await flashSsh({ archive, target: values.ssh, sshArgs: values['ssh-option'] ?? [], log })
    return
  }
  const result = await flashRoot({ archive, root: resolve(values.root!), log })
  const m = result.manifest
  console.log(`${result.upgraded ? 'upgraded' : 'installed'} gatemesh ${m.version} (${m.arch}) in ${resolve(values.root!)}; the agent starts on the next boot` +
    (result.keptData ? ' with the node directory already there' : m.identity.mode === 'enroll' ? ' and enrolls then' : ` as ${m.identity.peerId ?? '?'}`))
}
