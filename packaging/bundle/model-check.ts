import { join } from 'node:path'
import { DTYPES, type TensorSpec } from '../manifest.ts'
import { ModelLoadError } from './errors.ts'
import type { io } from '@tensorflow/tfjs'

export type ModelFormat = 'layers' | 'graph'

/** `layers` or `graph`, from model.json's `format`, or its topology's shape when absent. */
export function modelFormatOf (modelJson: io.ModelJSON): ModelFormat {
  if (modelJson.format === 'layers-model') return 'layers'
  if (modelJson.format === 'graph-model') return 'graph'
  const topology = modelJson.modelTopology as Record<string, unknown> | undefined
  if (topology != null && Array.isArray(topology.node)) return 'graph'
  if (topology != null && ('class_name' in topology || 'model_config' in topology)) return 'layers'
  throw new ModelLoadError(`model.json: format "${String(modelJson.format)}" is neither a layers nor a graph model`, { entry: 'model.json' })
}

function toSpec (name: string, shape: Array<number | null> | undefined, dtype: string | undefined, what: string): TensorSpec {
  if (dtype == null || !(DTYPES as readonly string[]).includes(dtype)) {
    throw new ModelLoadError(`${what} ${name}: dtype ${String(dtype)} is not one of ${DTYPES.join(', ')}`)
  }
  return { name: name.slice(0, 128), dtype: dtype as TensorSpec['dtype'], shape: (shape ?? []).map(d => d == null || d < 0 ? -1 : d) }
}

/**
 * Input and output names of a layers model as its topology spells them.
 * TF.js renames layers it has seen before in the same process
 * (`dense_input_1`), so the loaded model's names depend on what ran earlier.
 */
function layersNames (modelJson: io.ModelJSON): { inputs?: string[], outputs?: string[] } {
  const topology = modelJson.modelTopology as { model_config?: unknown, class_name?: string, config?: any } | undefined
  const model = (topology?.model_config ?? topology) as { class_name?: string, config?: any } | undefined
  const config = model?.config
  if (config == null) return {}
  if (Array.isArray(config.input_layers) && Array.isArray(config.output_layers)) {
    return { inputs: config.input_layers.map((l: unknown[]) => String(l[0])), outputs: config.output_layers.map((l: unknown[]) => String(l[0])) }
  }
  const layers = Array.isArray(config) ? config : config.layers
  if (model?.class_name === 'Sequential' && Array.isArray(layers) && layers.length > 0) {
    const first = layers[0]
    const input = first.class_name === 'InputLayer' ? String(first.config.name) : `${String(first.config.name)}_input`
    return { inputs: [input], outputs: [String(layers[layers.length - 1].config.name)] }
  }
  return {}
}

/**
 * Load the model with TensorFlow.js, run it once on zeros, and report its
 * input and output specs. Proves the model loads and executes before
 * anything is signed; the dry run also fills in output shapes a graph model
 * does not declare.
 */
export async function checkModel (modelDir: string, modelFile: string, format: ModelFormat, modelJson: io.ModelJSON): Promise<{ inputs: TensorSpec[], outputs: TensorSpec[], backend: string }> {
  const { loadTf } = await import('../tfjs/backend.ts')
  const { fileLoadHandler } = await import('../tfjs/file-io.ts')
  const { tf, backend } = await loadTf()
  const handler = fileLoadHandler(tf, join(modelDir, modelFile))
  let model: import('@tensorflow/tfjs').LayersModel | import('@tensorflow/tfjs').GraphModel
  try {
    model = format === 'layers' ? await tf.loadLayersModel(handler) : await tf.loadGraphModel(handler)
  } catch (err: any) {
    throw new ModelLoadError(`${modelFile}: TensorFlow.js cannot load this ${format} model: ${err.message}`, { cause: err, entry: modelFile })
  }
  try {
    const names = format === 'layers' ? layersNames(modelJson) : {}
    const declaredIn = format === 'layers'
      ? (model as import('@tensorflow/tfjs').LayersModel).inputs.map((t, i) => ({ name: names.inputs?.[i] ?? t.name, shape: t.shape, dtype: t.dtype as string }))
      : (model as import('@tensorflow/tfjs').GraphModel).inputs.map(t => ({ name: t.name, shape: t.shape, dtype: t.dtype as string }))
    const declaredOut = format === 'layers'
      ? (model as import('@tensorflow/tfjs').LayersModel).outputs.map((t, i) => ({ name: names.outputs?.[i] ?? t.name, shape: t.shape as Array<number | null> | undefined, dtype: t.dtype as string | undefined }))
      : (model as import('@tensorflow/tfjs').GraphModel).outputs.map(t => ({ name: t.name, shape: t.shape as Array<number | null> | undefined, dtype: t.dtype as string | undefined }))
    const inputs = declaredIn.map(t => toSpec(t.name, t.shape, t.dtype, 'input'))
    const outputs = tf.tidy(() => {
      const feeds = inputs.map(s => tf.zeros(s.shape.map(d => d < 0 ? 1 : d), s.dtype === 'string' ? 'float32' : s.dtype))
      const result = model.predict(feeds.length === 1 ? feeds[0]! : feeds)
      const tensors = Array.isArray(result) ? result : result instanceof tf.Tensor ? [result] : Object.values(result)
      const batchFree = inputs.some(s => s.shape[0] === -1)
      return declaredOut.map((o, i) => {
        const t = tensors[i]
        if (t == null) throw new Error(`output ${o.name} produced no tensor`)
        const shape = o.shape ?? t.shape.map((d, j) => j === 0 && batchFree ? -1 : d)
        return toSpec(o.name, shape, o.dtype ?? t.dtype, 'output')
      })
    })
    return { inputs, outputs, backend }
  } catch (err: any) {
    if (err instanceof ModelLoadError) throw err
    throw new ModelLoadError(`${modelFile}: the ${format} model loads but does not run on zero inputs: ${err.message}`, { cause: err, entry: modelFile })
  } finally {
    model.dispose()
  }
}
