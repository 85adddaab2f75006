import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { runInThisContext } from 'node:vm'
import { RuntimeUnavailableError } from './errors.ts'

export type LiteRt = typeof import('@litertjs/core')


let loading: Promise<LiteRt> | undefined

/**
 * LiteRT.js in Node. It is written for browsers and web workers: it loads
 * its Emscripten loader with `importScripts` and reads `self.ModuleFactory`.
 * The shim gives this thread a `self` and an `importScripts` that evaluates
 * the loader with the CommonJS variables its Node code path uses (`require`,
 * `__dirname`), so the loader reads its .wasm from disk. Its log lines (one
 * per model compiled) go nowhere, and so does its complaint that there is no
 * WebGPU. Call only in a thread that runs TFLite models and nothing else.
 */
export async function loadLiteRt (): Promise<LiteRt> {
  loading ??= (async () => {
    const g = globalThis as Record<string, unknown>
    g.self ??= globalThis
    g.importScripts = (url: string | URL) => {
      const file = String(url).startsWith('file:') ? fileURLToPath(url) : String(url)
      const source = readFileSync(file, 'utf8')
      const factory = runInThisContext(`(function (require, __dirname, __filename, module, exports) {${source}\n;return ModuleFactory})`, { filename: file }) as (...args: unknown[]) => unknown
      const module = { exports: {} }
      g.ModuleFactory = factory(createRequire(file), dirname(file), file, module, module.exports)
    }
    g.Module = { print: () => {}, printErr: () => {} }
    const warn = console.warn
    const error = console.error
    console.warn = () => {}
    console.error = () => {}
    try {
      // a bundle external: it loads its .wasm from beside itself
      const litert = await import('@litertjs/core')
      const wasmDir = join(dirname(fileURLToPath(import.meta.resolve('@litertjs/core'))), '..', 'wasm') + '/'
      await litert.loadLiteRt(wasmDir)
      return litert
    } catch (err: any) {
      loading = undefined
      throw new RuntimeUnavailableError(`LiteRT.js cannot load here: ${err.message}`, { cause: err })
    } finally {
      console.warn = warn
      console.error = error
    }
  })()
  return await loading
}
