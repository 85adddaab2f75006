import { loadTf, type Tf } from '../../packaging/tfjs/backend.ts'

export type BackendPreference = 'auto' | 'tensorflow' | 'wasm' | 'cpu'
export type BackendName = 'tensorflow' | 'wasm' | 'cpu'

// a variable, so neither tsc nor a bundler goes looking for a package that is usually absent
const TFJS_NODE = '@tensorflow/tfjs-node'

/**
 * TensorFlow.js with the best backend this machine has (tfjs-node, else
 * wasm, else cpu; see packaging/tfjs/backend.ts). Called inside inference
 * workers only: the agent's main thread never loads TensorFlow.js.
 */
export async function loadBackend (preference: BackendPreference = 'auto'): Promise<{ tf: Tf, backend: BackendName }> {
  // tfjs prints an install hint for tfjs-node on import; the backend is chosen on purpose
  const warn = console.warn
  console.warn = () => {}
  try {
    const { tf, backend } = await loadTf(preference === 'auto' ? undefined : preference)
    if (preference !== 'auto' && backend !== preference) throw new Error(`backend ${preference} is not available here (got ${backend})`)
    return { tf, backend: backend as BackendName }
  } finally {
    console.warn = warn
  }
}

/**
 * The backend `loadBackend` would pick, judged by which packages resolve,
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
