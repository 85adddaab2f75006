import { spawn } from 'node:child_process'

const ORT_NODE = 'onnxruntime-node'
/** A binding that takes longer than this to import is not used. */
const PROBE_TIMEOUT_MS = 60_000

let probing: Promise<boolean> | undefined

/**
 * Whether ONNX Runtime's native binding loads on this machine, tried in a
 * child process once per process. A binding that cannot load usually
 * throws, but some crash the process outright — the arm64 build segfaults
 * while reading CPU topology under qemu-user — and a crash in an inference
 * worker would take the whole agent down. So nothing here imports it: a
 * child does, and its exit code decides between `native` and `wasm`.
 */
export async function nativeOnnxLoads (): Promise<boolean> {
  probing ??= (async () => {
    if (process.env.GATEMESH_ONNX_BACKEND === 'wasm') return false
    let url: string
    try {
      url = import.meta.resolve(ORT_NODE)
    } catch {
      return false
    }
    return await new Promise<boolean>(resolve => {
      const child = spawn(process.execPath, ['--input-type=module', '-e', `await import(${JSON.stringify(url)})`], { stdio: 'ignore' })
      const timer = setTimeout(() => { child.kill('SIGKILL') }, PROBE_TIMEOUT_MS)
      child.once('error', () => { clearTimeout(timer); resolve(false) })
      child.once('exit', code => { clearTimeout(timer); resolve(code === 0) })
    })
  })()
  return await probing
}

/** `auto` made concrete: `native` where the binding loads, else `wasm`. */
export async function resolveOnnxBackend (preference: 'auto' | 'native' | 'wasm'): Promise<'native' | 'wasm'> {
  if (preference !== 'auto') return preference
  return await nativeOnnxLoads() ? 'native' : 'wasm'
}
