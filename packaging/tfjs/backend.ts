/**
 * TensorFlow.js, loaded on demand: it costs ~40 MB of RSS, which an idle
 * agent must not pay. Backend preference: tfjs-node when it can be imported
 * (it needs libtensorflow, which not every machine can install), then wasm,
 * then the pure-JS cpu backend.
 */
export type Tf = typeof import('@tensorflow/tfjs')

let loading: Promise<{ tf: Tf, backend: string }> | undefined

export async function loadTf (preferred?: 'tensorflow' | 'wasm' | 'cpu'): Promise<{ tf: Tf, backend: string }> {
  loading ??= (async () => {
    const tf = await import('@tensorflow/tfjs')
    const candidates: string[] = []
    try {
      // a module name in a variable keeps bundlers and tsc from requiring it
      const nodeBinding = '@tensorflow/tfjs-node'
      await import(nodeBinding)
      candidates.push('tensorflow')
    } catch {}
    await import('@tensorflow/tfjs-backend-wasm')
    candidates.push('wasm', 'cpu')
    const order = preferred == null ? candidates : [preferred, ...candidates.filter(c => c !== preferred)]
    for (const name of order) {
      try {
        if (await tf.setBackend(name)) {
          await tf.ready()
          return { tf, backend: tf.getBackend() }
        }
      } catch {}
    }
    throw new Error('no TensorFlow.js backend could be initialised')
  })()
  return await loading
}
