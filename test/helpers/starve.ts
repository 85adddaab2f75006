import { access, mkdir, readFile, rmdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { run, start } from './processes.ts'

export interface Starvation {
  /** how the process is starved, for the test log */
  method: string
  /** how much it was held back so far (the cgroup's throttling counters), when known */
  throttled(): Promise<string>
  undo(): Promise<void>
}

const exists = async (path: string): Promise<boolean> => await access(path).then(() => true, () => false)

/**
 * Starve one process of CPU: a CFS quota of `percent` % of one core in a
 * cgroup of its own (cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us`), or,
 * where cgroups cannot be written, busy processes pinned with taskset to
 * the core it is pinned to. `undo()` releases it and removes what it made.
 */
export async function starve (pid: number, percent: number): Promise<Starvation> {
  const name = `gatemesh-starve-${pid}`
  const period = 100_000
  const quota = Math.max(1000, Math.round(period * percent / 100))
  // cgroup v2: one unified hierarchy with the cpu controller enabled for children
  if (await exists('/sys/fs/cgroup/cgroup.controllers')) {
    const controllers = await readFile('/sys/fs/cgroup/cgroup.subtree_control', 'utf8').catch(() => '')
    if (controllers.split(/\s+/).includes('cpu')) {
      const dir = join('/sys/fs/cgroup', name)
      try {
        await mkdir(dir)
        await writeFile(join(dir, 'cpu.max'), `${quota} ${period}`)
        await writeFile(join(dir, 'cgroup.procs'), String(pid))
        return {
          method: `cgroup v2 cpu.max "${quota} ${period}" (${percent} % of one core)`,
          throttled: async () => await throttling(join(dir, 'cpu.stat')),
          undo: async () => {
            await writeFile('/sys/fs/cgroup/cgroup.procs', String(pid)).catch(() => {})
            await rmdir(dir).catch(() => {})
          }
        }
      } catch {
        await rmdir(dir).catch(() => {})
      }
    }
  }
  // cgroup v1: the cpu controller's own hierarchy
  if (await exists('/sys/fs/cgroup/cpu/cgroup.procs')) {
    const dir = join('/sys/fs/cgroup/cpu', name)
    try {
      await mkdir(dir)
      await writeFile(join(dir, 'cpu.cfs_period_us'), String(period))
      await writeFile(join(dir, 'cpu.cfs_quota_us'), String(quota))
      await writeFile(join(dir, 'cgroup.procs'), String(pid))
      return {
        method: `cgroup v1 cpu.cfs_quota_us ${quota} / cpu.cfs_period_us ${period} (${percent} % of one core)`,
        throttled: async () => await throttling(join(dir, 'cpu.stat')),
        undo: async () => {
          await writeFile('/sys/fs/cgroup/cpu/cgroup.procs', String(pid)).catch(() => {})
          await rmdir(dir).catch(() => {})
        }
      }
    } catch {
      await rmdir(dir).catch(() => {})
    }
  }
  // no writable cgroup: pin it to core 0 with busy processes competing there
  await run('taskset', ['-a', '-cp', '0', String(pid)], { timeoutMs: 30_000 })
  // through the process helper: the hogs die with the test however it ends
  const hogs = [0, 1, 2].map(i => start('taskset', ['-c', '0', process.execPath, '-e', 'for(;;){}'], { name: `cpu hog ${i}` }))
  return {
    method: 'taskset: pinned to core 0 with three busy processes pinned there too',
    throttled: async () => 'unknown (no cgroup)',
    undo: async () => {
      for (const h of hogs) h.kill()
      await Promise.all(hogs.map(async h => await h.exited))
    }
  }
}

/** `nr_periods`, `nr_throttled` and the time held back, from a cgroup's cpu.stat. */
async function throttling (path: string): Promise<string> {
  const stat = Object.fromEntries((await readFile(path, 'utf8').catch(() => '')).trim().split('\n').map(l => l.split(' ')))
  const ms = stat.throttled_usec != null ? Number(stat.throttled_usec) / 1000 : Number(stat.throttled_time ?? 0) / 1e6
  return `throttled in ${stat.nr_throttled ?? '?'} of ${stat.nr_periods ?? '?'} periods, ${(ms / 1000).toFixed(1)} s held back`
}
