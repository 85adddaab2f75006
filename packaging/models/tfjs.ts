import { join } from 'node:path'
import { DTYPES, type TensorSpec } from '../manifest.ts'
import { loadTf, type Tf } from '../tfjs/backend.ts'
import { fileLoadHandler } from '../tfjs/file-io.ts'
import { ModelFormatError } from './errors.ts'
import type { BackendName, ModelRunner, OpenModelInit } from './runner.ts'
import type { WireTensor } from './tensor.ts'
import type * as TF from '@tensorflow/tfjs'
import type { io } from '@tensorflow/tfjs'

/** The dtypes TensorFlow.js tensors can hold. */
const TFJS_DTYPES = new Set(['float32', 'int32', 'bool', 'string'])

/** `tfjs-layers` or `tfjs-graph`, from model.json's `format`, or its topology's shape when absent. */
export function tfjsFormatOf (modelJson: io.ModelJSON): 'tfjs-layers' | 'tfjs-graph' {
  if (modelJson.format === 'layers-model') return 'tfjs-layers'
  if (modelJson.format === 'graph-model') return 'tfjs-graph'
  const topology = modelJson.modelTopology as Record<string, unknown> | undefined
  if (topology != null && Array.isArray(topology.node)) return 'tfjs-graph'
  if (topology != null && ('class_name' in topology || 'model_config' in topology)) return 'tfjs-layers'
  throw new ModelFormatError(`model.json: format "${String(modelJson.format)}" is neither a layers nor a graph model`)
}

function toSpec (name: string, shape: ReadonlyArray<number | null> | undefined, dtype: string | undefined, what: string): TensorSpec {
  if (dtype == null || !(DTYPES as readonly string[]).includes(dtype)) throw new ModelFormatError(`${what} ${name}: dtype ${String(dtype)} is not one of ${DTYPES.join(', ')}`)
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
 * A TensorFlow.js layers or graph model. Inputs are fed by position (a
 * layers model's loaded input names depend on what the process loaded
 * before); outputs come back in the model's order. A graph model's output
 * shapes are often undeclared: they are filled in from a run on zeros.
 */
export async function openTfjs (init: OpenModelInit): Promise<ModelRunner> {
  const { readFile } = await import('node:fs/promises')
  let modelJson: io.ModelJSON
  try {
    modelJson = JSON.parse(await readFile(init.path, 'utf8')) as io.ModelJSON
  } catch (err: any) {
    throw new ModelFormatError(`cannot read a TensorFlow.js model.json: ${err.message}`, { cause: err })
  }
  const format = init.format as 'tfjs-layers' | 'tfjs-graph'
  // tfjs prints an install hint for tfjs-node on import; the backend is chosen on purpose
  const warn = console.warn
  console.warn = () => {}
  let tf: Tf
  let backend: string
  try {
    const preferred = init.tfjsBackend == null || init.tfjsBackend === 'auto' ? undefined : init.tfjsBackend
    ;({ tf, backend } = await loadTf(preferred))
    if (preferred != null && backend !== preferred) throw new ModelFormatError(`TensorFlow.js backend ${preferred} is not available here (got ${backend})`)
  } finally {
    console.warn = warn
  }
  const handler = fileLoadHandler(tf, init.path)
  let model: TF.LayersModel | TF.GraphModel
  try {
    model = format === 'tfjs-layers' ? await tf.loadLayersModel(handler) : await tf.loadGraphModel(handler)
  } catch (err: any) {
    throw new ModelFormatError(`TensorFlow.js cannot load this ${format} model: ${err.message}`, { cause: err })
  }
  const graphInputNames = model instanceof tf.GraphModel ? model.inputs.map(i => i.name) : []
  const names = format === 'tfjs-layers' ? layersNames(modelJson) : {}
  const declaredIn = model.inputs.map((t, i) => ({ name: names.inputs?.[i] ?? t.name, shape: t.shape, dtype: t.dtype as string }))
  const declaredOut = model.outputs.map((t, i) => ({ name: names.outputs?.[i] ?? t.name, shape: t.shape as Array<number | null> | undefined, dtype: t.dtype as string | undefined }))
  const inputs = declaredIn.map(t => toSpec(t.name, t.shape, t.dtype, 'input'))

  const execute = async (feeds: TF.Tensor[]): Promise<TF.Tensor[]> => {
    let out: TF.Tensor | TF.Tensor[] | TF.NamedTensorMap
    if (model instanceof tf.GraphModel) {
      const feed: TF.NamedTensorMap = {}
      feeds.forEach((t, i) => { feed[graphInputNames[i] ?? String(i)] = t })
      out = await model.executeAsync(feed)
    } else {
      out = model.predict(feeds.length === 1 ? feeds[0]! : feeds)
    }
    return out instanceof tf.Tensor ? [out] : Array.isArray(out) ? out : Object.values(out)
  }
  const run = async (wire: WireTensor[]): Promise<WireTensor[]> => {
    const feeds = wire.map((w, i) => {
      if (!TFJS_DTYPES.has(w.dtype)) throw new ModelFormatError(`input ${inputs[i]?.name ?? i}: TensorFlow.js cannot take ${w.dtype}`)
      return tf.tensor(w.data as Float32Array, w.shape, w.dtype as TF.DataType)
    })
    try {
      const outputs = await execute(feeds)
      try {
        const result: WireTensor[] = []
        for (const t of outputs) {
          // a copy we own: a backend may hand out its own storage (cpu) or a view of wasm memory, neither of which may be transferred
          const data = await t.data()
          result.push({ dtype: t.dtype as WireTensor['dtype'], shape: t.shape, data: (Array.isArray(data) ? [...data] : (data as Float32Array).slice()) as WireTensor['data'] })
        }
        return result
      } finally {
        tf.dispose(outputs)
      }
    } finally {
      tf.dispose(feeds)
    }
  }

  let outputs: TensorSpec[]
  try {
    // a run on zeros proves the model executes, and fills in undeclared output shapes
    const { zeroInputs } = await import('./runner.ts')
    const result = await run(zeroInputs(inputs))
    const batchFree = inputs.some(s => s.shape[0] === -1)
    outputs = declaredOut.map((o, i) => {
      const t = result[i]
      if (t == null) throw new ModelFormatError(`output ${o.name} produced no tensor`)
      return toSpec(o.name, o.shape ?? t.shape.map((d, j) => j === 0 && batchFree ? -1 : d), o.dtype ?? t.dtype, 'output')
    })
  } catch (err: any) {
    model.dispose()
    if (err instanceof ModelFormatError) throw err
    throw new ModelFormatError(`the ${format} model loads but does not run on zero inputs: ${err.message}`, { cause: err })
  }
  return {
    format,
    backend: backend as BackendName,
    inputs,
    outputs,
    run,
    dispose: async () => { model.dispose() }
  }
}

/** The files a TF.js model needs: model.json and its weight shards, relative to its folder. */
export async function tfjsModelFiles (dir: string, modelFile: string): Promise<{ modelJson: io.ModelJSON, files: string[] }> {
  const { readFile } = await import('node:fs/promises')
  const { posix } = await import('node:path')
  let modelJson: io.ModelJSON
  try {
    modelJson = JSON.parse(await readFile(join(dir, modelFile), 'utf8')) as io.ModelJSON
  } catch (err: any) {
    throw new ModelFormatError(`${join(dir, modelFile)}: cannot read a TensorFlow.js model.json: ${err.message}`, { cause: err })
  }
  if (modelJson == null || typeof modelJson !== 'object') throw new ModelFormatError(`${modelFile}: not a TensorFlow.js model.json`)
  return { modelJson, files: [modelFile, ...(modelJson.weightsManifest ?? []).flatMap(g => g.paths.map(p => posix.normalize(p)))] }
}
