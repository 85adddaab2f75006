import type { KeyObject } from 'node:crypto'
import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { buildBundle, type BuiltBundle } from '../../packaging/bundle/index.ts'
import { LABELS, SCALE, WINDOW } from '../../node/cli/demo/anomaly/train.ts'

/** The trained anomaly model (made by node/cli/demo/anomaly/train.ts). */
export const ANOMALY_MODEL_DIR = new URL('../../node/cli/demo/anomaly/', import.meta.url).pathname

export interface AnomalyBundleOptions {
  name?: string
  version?: string
  /** the bundle's config.json: instance defaults, rules */
  config?: Record<string, unknown>
  /** source of an action script */
  action?: string
  /** load and run the model while building (as `gatemesh bundle build` does). @default false */
  validate?: boolean
  /** where the zip (and the action script) go; a fresh directory under it is used */
  under: string
  /** what the manifest declares the model outputs (one the model does not have makes a bundle that fails to load). @default the model's own */
  outputs?: Array<{ name: string, dtype: string, shape: number[], labels?: string[] }>
}

/** A signed bundle zip of the anomaly model, built with the bundle format's own builder. */
export async function anomalyBundleZip (key: KeyObject, options: AnomalyBundleOptions): Promise<BuiltBundle & { bytes: Buffer }> {
  const dir = await mkdtemp(join(options.under, 'bundle-'))
  let action: string | undefined
  if (options.action != null) {
    action = join(dir, 'action.js')
    await writeFile(action, options.action)
  }
  const built = await buildBundle({
    modelDir: ANOMALY_MODEL_DIR,
    name: options.name ?? 'anomaly',
    version: options.version ?? '1.0.0',
    config: options.config ?? {},
    ...(action == null ? {} : { action }),
    signer: { key },
    out: join(dir, 'bundle.zip'),
    validate: options.validate ?? false,
    inputs: [{ name: 'window', dtype: 'float32', shape: [-1, WINDOW] }],
    outputs: (options.outputs ?? [{ name: 'class', dtype: 'float32', shape: [-1, 2], labels: LABELS }]) as Parameters<typeof buildBundle>[0]['outputs']
  })
  return { ...built, bytes: await readFile(built.out) }
}

/** A window of `WINDOW` temperatures around `base`, with an optional spike at the end. */
export function temperatures (base: number, spike = 0): number[] {
  return Array.from({ length: WINDOW }, (_, i) => base + Math.sin(i / 3) + (i === WINDOW - 1 ? spike : 0))
}

export { LABELS, SCALE, WINDOW }
