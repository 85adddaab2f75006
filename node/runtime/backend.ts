import type * as TF from '@tensorflow/tfjs'

export type BackendPreference = 'auto' | 'tensorflow' | 'wasm' | 'cpu'
export type BackendName = 'tensorflow' | 'wasm' | 'cpu'

// a variable, so neither tsc nor a bundler goes looking for a package that is usually absent
const TFJS_NODE = '@tensorflow/tfjs-node'

/**
 * Load TensorFlow.js with the best backend this machine has: tfjs-node
 * (native libtensorflow) when it can be imported, else the WebAssembly
 * backend, else pure-JS `cpu`. Runs inside inference workers only: the
 * agent's main thread never loads TensorFlow.js.
 */
export async function loadTensorflow (preference: BackendPreference = 'auto'): Promise<{ tf: typeof TF, backend: BackendName }> {
  // tfjs prints an install hint for tfjs-node on import; we chose the backend on purpose
  const warn = console.warn
  console.warn = () => {}
  try {
    if (preference === 'auto' || preference === 'tensorflow') {
      try {
        const tf = await import(TFJS_NODE) as typeof TF
        await tf.ready()
        return { tf, backend: 'tensorflow' }
      } catch (err) {
        if (preference === 'tensorflow') throw err
      }
    }
    const tf = await import('@tensorflow/tfjs')
    if (preference === 'auto' || preference === 'wasm') {
      try {
        await import('@tensorflow/tfjs-backend-wasm')
        if (await tf.setBackend('wasm')) {
          await tf.ready()
          return { tf, backend: 'wasm' }
        }
      } catch (err) {
        if (preference === 'wasm') throw err
      }
      if (preference === 'wasm') throw new Error('the wasm backend did not initialise')
    }
    await tf.setBackend('cpu')
    await tf.ready()
    return { tf, backend: 'cpu' }
  } finally {
    console.warn = warn
  }
}

/**
 * The backend `loadTensorflow` would pick, judged by which packages resolve,
 * without loading any of them: what an idle agent advertises before its
 * first instance starts.
 */
export function probeBackend (preference: BackendPreference = 'auto'): BackendName {
  if (preference !== 'auto') return preference
  const resolves = (name: string): boolean => {
    try {
      import.meta.resolve(name)
      return true
    } catch {
      return false
    }
  }
  if (resolves(TFJS_NODE)) return 'tensorflow'
  if (resolves('@tensorflow/tfjs-backend-wasm')) return 'wasm'
  return 'cpu'
}
