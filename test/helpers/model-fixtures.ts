import { existsSync, readFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')

/**
 * The shared model fixtures (shared/fixtures/models beside the repository:
 * the same two networks as ONNX and TFLite, their weights, TensorFlow's
 * reference outputs and TensorProto messages). A checkout in a worktree
 * finds them one level further up; GATEMESH_MODEL_FIXTURES overrides.
 */
export const FIXTURES = ((): string => {
  const candidates = [process.env.GATEMESH_MODEL_FIXTURES, join(REPO, '..', 'shared', 'fixtures', 'models'), join(REPO, '..', '..', 'shared', 'fixtures', 'models')]
  const found = candidates.find(c => c != null && existsSync(join(c, 'reference.json')))
  if (found == null) throw new Error(`the model fixtures are not there: looked in ${candidates.filter(Boolean).join(', ')}`)
  return found
})()

export const fixture = (name: string): string => join(FIXTURES, name)

export interface Reference { input: unknown[], output: number[][] }
/** TensorFlow's reference inputs and outputs per network. */
export const REFERENCE = JSON.parse(readFileSync(fixture('reference.json'), 'utf8')) as { mlp: Reference, conv: Reference }

/** Every model fixture with its network, format and the names the model itself declares. */
export const MODEL_FIXTURES = [
  { file: 'mlp.onnx', net: 'mlp', format: 'onnx', input: 'readings', output: 'scores' },
  { file: 'conv.onnx', net: 'conv', format: 'onnx', input: 'image', output: 'probabilities' },
  { file: 'mlp-b1.tflite', net: 'mlp', format: 'tflite', input: 'readings', output: 'output_0' },
  { file: 'mlp-dyn.tflite', net: 'mlp', format: 'tflite', input: 'readings', output: 'output_0' },
  { file: 'conv-b1.tflite', net: 'conv', format: 'tflite', input: 'image', output: 'output_0' },
  { file: 'conv-dyn.tflite', net: 'conv', format: 'tflite', input: 'image', output: 'output_0' }
] as const

/** Largest absolute difference between two equally shaped nested arrays of numbers. */
export function maxDiff (a: unknown, b: unknown): number {
  if (Array.isArray(a) && Array.isArray(b)) {
    if (a.length !== b.length) return Infinity
    return a.reduce((m: number, x, i) => Math.max(m, maxDiff(x, b[i])), 0)
  }
  return typeof a === 'number' && typeof b === 'number' ? Math.abs(a - b) : Infinity
}

/**
 * The TensorFlow.js twin of a fixture network, built from weights.json with
 * the same layers Keras used, saved as a layers model in `dir`.
 */
export async function saveTfjsTwin (net: 'mlp' | 'conv', dir: string): Promise<void> {
  const { loadBackend } = await import('../../node/runtime/backend.ts')
  const { fileSaveHandler } = await import('../../packaging/tfjs/file-io.ts')
  const { tf } = await loadBackend('auto')
  const w = JSON.parse(readFileSync(fixture('weights.json'), 'utf8'))[net]
  const m = tf.sequential()
  if (net === 'mlp') {
    m.add(tf.layers.dense({ inputShape: [16], units: 32, activation: 'relu' }))
    m.add(tf.layers.dense({ units: 2, activation: 'softmax' }))
    m.layers[0]!.setWeights([tf.tensor(w.W1), tf.tensor(w.b1)])
    m.layers[1]!.setWeights([tf.tensor(w.W2), tf.tensor(w.b2)])
  } else {
    m.add(tf.layers.conv2d({ inputShape: [28, 28, 1], filters: 8, kernelSize: 3, activation: 'relu' }))
    m.add(tf.layers.maxPooling2d({ poolSize: 2 }))
    m.add(tf.layers.flatten())
    m.add(tf.layers.dense({ units: 10, activation: 'softmax' }))
    m.layers[0]!.setWeights([tf.tensor(w.kernel_hwio), tf.tensor(w.kernel_bias)])
    m.layers[3]!.setWeights([tf.tensor(w.dense), tf.tensor(w.dense_bias)])
  }
  await m.save(fileSaveHandler(tf, dir))
  m.dispose()
}
