import { cp } from 'node:fs/promises'
import { join } from 'node:path'
import { LABELS, SCALE, WINDOW } from '../fixtures/anomaly/train.ts'
import { writeBundleDir } from './bundle.ts'
import type { KeyObject } from 'node:crypto'

/** The trained anomaly model (made by test/fixtures/anomaly/train.ts). */
export const ANOMALY_MODEL_DIR = new URL('../fixtures/anomaly/', import.meta.url).pathname

/** A signed bundle of the anomaly model in `dir`, with `config` as its config.json. */
export async function anomalyBundle (dir: string, key: KeyObject, options: { name?: string, config?: unknown, action?: string } = {}): Promise<string> {
  for (const f of ['model.json', 'weights.bin']) await cp(join(ANOMALY_MODEL_DIR, f), join(dir, f))
  await writeBundleDir(dir, ['model.json', 'weights.bin'], {
    name: options.name ?? 'anomaly',
    inputs: [{ name: 'window', dtype: 'float32', shape: [-1, WINDOW] }],
    outputs: [{ name: 'class', dtype: 'float32', shape: [-1, 2], labels: LABELS }],
    key,
    ...(options.config === undefined ? {} : { config: options.config }),
    ...(options.action == null ? {} : { action: options.action })
  })
  return dir
}

/** A window of `WINDOW` temperatures around `base`, with an optional spike at the end. */
export function temperatures (base: number, spike = 0): number[] {
  return Array.from({ length: WINDOW }, (_, i) => base + Math.sin(i / 3) + (i === WINDOW - 1 ? spike : 0))
}

export { SCALE, WINDOW }
