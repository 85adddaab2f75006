import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { dirname, join, posix, relative, resolve } from 'node:path'
import type { Tf } from './backend.ts'
import type { io } from '@tensorflow/tfjs'

/** Weight files are split like the TF.js converter does, so browsers and caches handle them well. */
export const DEFAULT_SHARD_BYTES = 4 * 1024 * 1024

/**
 * Save handler writing the TF.js on-disk layout: `model.json` plus weight
 * shards `group1-shardNofM.bin`. TF.js itself only saves to disk through
 * tfjs-node, which cannot be installed everywhere.
 */
export function fileSaveHandler (tf: Tf, dir: string, options: { shardBytes?: number, modelFile?: string } = {}): io.IOHandler {
  const shardBytes = options.shardBytes ?? DEFAULT_SHARD_BYTES
  return tf.io.withSaveHandler(async artifacts => {
    await mkdir(dir, { recursive: true })
    const data = new Uint8Array(tf.io.CompositeArrayBuffer.join(artifacts.weightData ?? new ArrayBuffer(0)))
    const count = Math.max(1, Math.ceil(data.byteLength / shardBytes))
    const paths: string[] = []
    for (let i = 0; i < count; i++) {
      const name = `group1-shard${i + 1}of${count}.bin`
      await writeFile(join(dir, name), data.subarray(i * shardBytes, (i + 1) * shardBytes))
      paths.push(name)
    }
    // the fields TF.js's own (unexported) getModelJSONForModelArtifacts writes
    const modelJson: Record<string, unknown> = {
      modelTopology: artifacts.modelTopology,
      format: artifacts.format,
      generatedBy: artifacts.generatedBy,
      convertedBy: artifacts.convertedBy,
      weightsManifest: [{ paths, weights: artifacts.weightSpecs ?? [] }]
    }
    for (const key of ['signature', 'userDefinedMetadata', 'modelInitializer', 'initializerSignature', 'trainingConfig'] as const) {
      if (artifacts[key] != null) modelJson[key] = artifacts[key]
    }
    await writeFile(join(dir, options.modelFile ?? 'model.json'), JSON.stringify(modelJson))
    return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) }
  })
}

/** The files a `model.json` names: itself and its weight shards, as paths relative to its folder. */
export function weightPaths (modelJson: io.ModelJSON): string[] {
  return (modelJson.weightsManifest ?? []).flatMap(group => group.paths.map(p => posix.normalize(p)))
}

/** Read a `model.json` and its weights into artifacts for `tf.io.fromMemory`. */
export async function readModelArtifacts (tf: Tf, modelJsonPath: string): Promise<io.ModelArtifacts> {
  const modelJson = JSON.parse(await readFile(modelJsonPath, 'utf8')) as io.ModelJSON
  const base = dirname(modelJsonPath)
  return await tf.io.getModelArtifactsForJSON(modelJson, async manifest => {
    const buffers: ArrayBuffer[] = []
    for (const group of manifest) {
      for (const p of group.paths) {
        const file = resolve(base, p)
        // a model.json must not read weights from outside its own folder
        if (relative(base, file).startsWith('..')) throw new Error(`weight path ${p} leaves the model folder`)
        const bytes = await readFile(file)
        buffers.push(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer)
      }
    }
    return [tf.io.getWeightSpecs(manifest), tf.io.concatenateArrayBuffers(buffers)]
  })
}

/** A load handler for `tf.loadLayersModel` / `tf.loadGraphModel` reading from disk. */
export function fileLoadHandler (tf: Tf, modelJsonPath: string): io.IOHandler {
  return { load: async () => await readModelArtifacts(tf, modelJsonPath) }
}
