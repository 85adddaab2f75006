import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ANOMALY_MODEL_DIR, LABELS, WINDOW } from './anomaly-bundle.ts'

/** The fixture's TF.js model files, as a user would pick them. */
export const ANOMALY_FILES = ['model.json', 'group1-shard1of1.bin'].map(f => join(ANOMALY_MODEL_DIR, f))

/** Output spec with class labels, sent in the `outputs` form field. */
export const ANOMALY_OUTPUTS = [{ name: 'class', dtype: 'float32', shape: [-1, 2], labels: LABELS }]

/** A config.json for the anomaly model: a window over one temperature sensor and a rule that logs anomalies. */
export function anomalyConfig (sensor?: string): Record<string, unknown> {
  return {
    input: { sensors: sensor == null ? [] : [sensor], window: { size: WINDOW, stride: 4 }, preprocess: [{ op: 'scale', min: 0, max: 50 }] },
    rules: [{ name: 'spike', when: 'class == "anomaly" && score > 0.9', cooldownMs: 10_000, actions: [{ type: 'log', level: 'warn', message: 'anomaly on {{sensor}}' }] }]
  }
}

export interface UploadFormOptions {
  name?: string
  version?: string
  config?: Record<string, unknown> | string
  /** extra or replacing text fields */
  fields?: Record<string, string>
  /** replace the model files with these [filename, bytes] */
  files?: Array<[string, Uint8Array]>
  action?: string
}

/** The multipart form of an upload of the anomaly model. */
export async function anomalyUploadForm (options: UploadFormOptions = {}): Promise<FormData> {
  const form = new FormData()
  form.set('name', options.name ?? 'anomaly')
  form.set('version', options.version ?? '1.0.0')
  form.set('deploymentType', 'gateway')
  form.set('modelType', 'anomaly detection')
  form.set('inputFormat', `${WINDOW} temperatures, °C`)
  form.set('outputFormat', 'softmax over [normal, anomaly]')
  form.set('outputs', JSON.stringify(ANOMALY_OUTPUTS))
  for (const [k, v] of Object.entries(options.fields ?? {})) form.set(k, v)
  const files = options.files ?? await Promise.all(ANOMALY_FILES.map(async f => [f.split('/').pop()!, await readFile(f)] as [string, Uint8Array]))
  for (const [name, bytes] of files) form.append('model', new Blob([bytes]), name)
  const config = options.config ?? anomalyConfig()
  form.set('config', new Blob([typeof config === 'string' ? config : JSON.stringify(config)], { type: 'application/json' }), 'config.json')
  if (options.action != null) form.set('action', new Blob([options.action], { type: 'text/javascript' }), 'notify.js')
  return form
}

/** A FormData serialised, for app.inject(). */
export async function multipartPayload (form: FormData): Promise<{ payload: Buffer, headers: Record<string, string> }> {
  const req = new Request('http://127.0.0.1/', { method: 'POST', body: form })
  return { payload: Buffer.from(await req.arrayBuffer()), headers: { 'content-type': req.headers.get('content-type')! } }
}
