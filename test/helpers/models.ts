/**
 * Real TensorFlow.js models for tests, saved to disk with our file IO
 * handler: a small layers model, and a graph model built from the same
 * weights (a GraphDef in TF.js JSON form, the layout tfjs-converter writes),
 * so both must predict the same numbers.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { loadTf, type Tf } from '../../packaging/tfjs/backend.ts'
import { fileSaveHandler } from '../../packaging/tfjs/file-io.ts'

export async function tfjs (): Promise<Tf> {
  return (await loadTf()).tf
}

/** A dense classifier 4 → 8 (relu) → 3 (softmax), saved as a layers model in `dir`. */
export async function saveLayersModel (dir: string, options: { hidden?: number, inputs?: number } = {}): Promise<import('@tensorflow/tfjs').LayersModel> {
  const tf = await tfjs()
  const model = tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [options.inputs ?? 4], units: options.hidden ?? 8, activation: 'relu', name: 'hidden' }),
      tf.layers.dense({ units: 3, activation: 'softmax', name: 'probs' })
    ]
  })
  await model.save(fileSaveHandler(tf, dir))
  return model
}

const dims = (shape: number[]): object => ({ dim: shape.map(d => ({ size: String(d) })) })
const FLOAT = { type: 'DT_FLOAT' }

/**
 * Save the same network as a TF.js graph model: Placeholder → MatMul →
 * BiasAdd → Relu → MatMul → BiasAdd → Softmax, weights as Const nodes.
 */
export async function saveGraphModelFrom (layers: import('@tensorflow/tfjs').LayersModel, dir: string): Promise<void> {
  const [w1, b1, w2, b2] = layers.getWeights()
  const inputs = w1!.shape[0]!
  const constNode = (name: string, shape: number[]): object => ({ name, op: 'Const', attr: { value: { tensor: { dtype: 'DT_FLOAT', tensorShape: dims(shape) } }, dtype: FLOAT } })
  const matmul = (name: string, a: string, b: string): object => ({ name, op: 'MatMul', input: [a, b], attr: { T: FLOAT, transpose_a: { b: false }, transpose_b: { b: false } } })
  const biasAdd = (name: string, a: string, b: string): object => ({ name, op: 'BiasAdd', input: [a, b], attr: { T: FLOAT, data_format: { s: Buffer.from('NHWC').toString('base64') } } })
  const modelTopology = {
    node: [
      { name: 'x', op: 'Placeholder', attr: { dtype: FLOAT, shape: { shape: dims([-1, inputs]) } } },
      constNode('hidden/kernel', w1!.shape), constNode('hidden/bias', b1!.shape),
      constNode('probs/kernel', w2!.shape), constNode('probs/bias', b2!.shape),
      matmul('hidden/MatMul', 'x', 'hidden/kernel'), biasAdd('hidden/BiasAdd', 'hidden/MatMul', 'hidden/bias'),
      { name: 'hidden/Relu', op: 'Relu', input: ['hidden/BiasAdd'], attr: { T: FLOAT } },
      matmul('probs/MatMul', 'hidden/Relu', 'probs/kernel'), biasAdd('probs/BiasAdd', 'probs/MatMul', 'probs/bias'),
      { name: 'probs/Softmax', op: 'Softmax', input: ['probs/BiasAdd'], attr: { T: FLOAT } }
    ],
    library: {},
    versions: { producer: 1 }
  }
  const tensors = [w1!, b1!, w2!, b2!]
  const names = ['hidden/kernel', 'hidden/bias', 'probs/kernel', 'probs/bias']
  const data = Buffer.concat(tensors.map(t => Buffer.from(new Float32Array(t.dataSync()).buffer)))
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, 'weights.bin'), data)
  await writeFile(join(dir, 'model.json'), JSON.stringify({
    format: 'graph-model',
    generatedBy: 'gatemesh test',
    convertedBy: 'gatemesh test (hand-written GraphDef)',
    modelTopology,
    signature: {
      inputs: { 'x:0': { name: 'x:0', dtype: 'DT_FLOAT', tensorShape: dims([-1, inputs]) } },
      outputs: { 'probs/Softmax:0': { name: 'probs/Softmax:0', dtype: 'DT_FLOAT', tensorShape: dims([-1, 3]) } }
    },
    weightsManifest: [{ paths: ['weights.bin'], weights: tensors.map((t, i) => ({ name: names[i], shape: t.shape, dtype: 'float32' })) }]
  }))
}
