import { ModelNotFoundError } from './errors.ts'
import { parsePredictBody, type Nested } from './tensors.ts'
import type { Runtime } from './runtime.ts'

/** TF Serving's predict, answered by the instance of `name` on this node. */
export async function predictLocal (runtime: Pick<Runtime, 'get'>, name: string, version: string | undefined, body: unknown): Promise<Record<string, unknown>> {
  const instance = runtime.get(name)
  if (version != null && instance.version !== version) throw new ModelNotFoundError(`model ${name} runs here in version ${instance.version}, not ${version}`)
  const { manifest } = instance.bundle
  const { instances, columnar } = parsePredictBody(body, manifest.inputs)
  const rows = await instance.predict(instances)
  const single = manifest.outputs.length === 1
  const predictions = rows.map(r => single ? r[0]! : Object.fromEntries(manifest.outputs.map((o, k) => [o.name, r[k]!])))
  if (!columnar) return { predictions }
  // TF Serving answers the columnar form with `outputs`, batch-major per output
  const outputs = single ? rows.map(r => r[0]!) : Object.fromEntries(manifest.outputs.map((o, k) => [o.name, rows.map(r => r[k]!)])) as Record<string, Nested[]>
  return { outputs, predictions }
}
