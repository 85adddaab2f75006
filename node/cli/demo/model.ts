import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { LABELS, SCALE, WINDOW } from './anomaly/train.ts'

/** The demo's anomaly model: a small dense net over 16 temperatures, trained by anomaly/train.ts. */
export const MODEL_DIR = new URL('./anomaly/', import.meta.url).pathname

/** The upload form the dashboard would send: model files, config.json with a notifying rule, descriptive fields. */
export async function modelUploadForm (webhook: string): Promise<FormData> {
  const form = new FormData()
  form.set('name', 'anomaly')
  form.set('version', '1.0.0')
  form.set('deploymentType', 'gateway')
  form.set('modelType', 'anomaly detection')
  form.set('inputFormat', `${WINDOW} temperatures, °C`)
  form.set('outputFormat', 'softmax over [normal, anomaly]')
  form.set('outputs', JSON.stringify([{ name: 'class', dtype: 'float32', shape: [-1, 2], labels: LABELS }]))
  for (const f of ['model.json', 'group1-shard1of1.bin']) form.append('model', new Blob([await readFile(join(MODEL_DIR, f))]), f)
  const config = {
    input: { window: { size: WINDOW, stride: 4 }, preprocess: [{ op: 'scale', ...SCALE }] },
    rules: [{
      name: 'anomaly',
      when: 'class == "anomaly" && score > 0.9',
      cooldownMs: 5000,
      actions: [{ type: 'http.post', url: webhook }, { type: 'log', level: 'warn', message: 'anomaly on {{sensor}}: peak {{window.max}} °C' }]
    }]
  }
  form.set('config', new Blob([JSON.stringify(config)], { type: 'application/json' }), 'config.json')
  return form
}
