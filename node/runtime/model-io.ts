import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { dirname, join, relative, resolve, sep } from 'node:path'
import type * as TF from '@tensorflow/tfjs'

/**
 * TensorFlow.js model files on disk without tfjs-node's `file://` handlers:
 * `model.json` plus its weight shards, read into memory and handed to
 * `tf.io.fromMemory`, and the reverse for saving (training scripts, tests).
 * `tf` is passed in so nothing here loads TensorFlow.js by itself.
 */

type Tf = typeof TF

/** Load the `model.json` at `entry` (bundle-relative) under `dir` as an IOHandler. */
export async function modelHandlerFromDir (tf: Tf, dir: string, entry: string): Promise<TF.io.IOHandler> {
  const modelPath = inside(dir, entry)
  const modelJson = JSON.parse(await readFile(modelPath, 'utf8')) as TF.io.ModelJSON
  const base = dirname(modelPath)
  const artifacts = await tf.io.getModelArtifactsForJSON(modelJson, async manifest => {
    const specs: TF.io.WeightsManifestEntry[] = []
    const buffers: ArrayBuffer[] = []
    for (const group of manifest) {
      specs.push(...group.weights)
      for (const path of group.paths) {
        const data = await readFile(inside(base, path))
        buffers.push(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength) as ArrayBuffer)
      }
    }
    return [specs, tf.io.concatenateArrayBuffers(buffers)]
  })
  return tf.io.fromMemory(artifacts)
}

/** Save a layers model as `model.json` + `weights.bin` in `dir`. */
export async function saveModelToDir (tf: Tf, model: TF.LayersModel, dir: string): Promise<{ files: string[] }> {
  await mkdir(dir, { recursive: true })
  await model.save(tf.io.withSaveHandler(async artifacts => {
    const weightData = artifacts.weightData == null ? new ArrayBuffer(0) : tf.io.concatenateArrayBuffers(Array.isArray(artifacts.weightData) ? artifacts.weightData : [artifacts.weightData])
    const manifest: TF.io.WeightsManifestConfig = [{ paths: ['weights.bin'], weights: artifacts.weightSpecs ?? [] }]
    const modelJson = {
      modelTopology: artifacts.modelTopology,
      format: artifacts.format ?? 'layers-model',
      generatedBy: artifacts.generatedBy,
      convertedBy: artifacts.convertedBy ?? null,
      weightsManifest: manifest
    }
    await writeFile(join(dir, 'model.json'), JSON.stringify(modelJson))
    await writeFile(join(dir, 'weights.bin'), Buffer.from(weightData))
    return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON', weightDataBytes: weightData.byteLength } }
  }))
  return { files: ['model.json', 'weights.bin'] }
}

/** Resolve a model-relative path and refuse anything that leaves `dir`. */
function inside (dir: string, path: string): string {
  const full = resolve(dir, path)
  const rel = relative(dir, full)
  if (rel === '' || rel.startsWith('..') || rel.startsWith(sep)) throw new Error(`model file path ${JSON.stringify(path)} leaves the bundle`)
  return full
}
