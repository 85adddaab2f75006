import { readdir, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { Arch } from './arch.ts'

/**
 * The model runtimes ship binaries for every platform in one package, in
 * layouts of their own (no `prebuilds/`): onnxruntime-node unpacks to
 * ~288 MB for darwin, win32 and linux on x64 and arm64, of which one
 * architecture's linux build is 25–45 MB; onnxruntime-web and LiteRT.js
 * carry WebAssembly builds for browser features Node never uses (WebGPU,
 * JSPI, threads). An image keeps what its architecture runs.
 */
export interface RuntimeLayout {
  /** what is kept, relative to the package: everything else in `prune` goes */
  keep: (arch: Arch) => string[]
  /** folders pruned down to `keep` */
  prune: string[]
  /** where the native binaries are, relative to the package (checked as ELF for the arch) */
  native?: (arch: Arch) => string
}

export const MODEL_RUNTIME_LAYOUTS: Record<string, RuntimeLayout> = {
  'onnxruntime-node': {
    prune: ['bin/napi-v6'],
    keep: arch => [`bin/napi-v6/linux/${arch}`],
    native: arch => `bin/napi-v6/linux/${arch}`
  },
  // Node imports dist/ort.node.min.mjs, which loads the plain SIMD build
  'onnxruntime-web': {
    prune: ['dist'],
    keep: () => ['dist/ort.node.min.mjs', 'dist/ort.node.min.js', 'dist/ort-wasm-simd-threaded.mjs', 'dist/ort-wasm-simd-threaded.wasm']
  },
  // the relaxed-SIMD build, and the compat build for CPUs without relaxed SIMD
  '@litertjs/core': {
    prune: ['wasm'],
    keep: () => ['wasm/litert_wasm_internal.js', 'wasm/litert_wasm_internal.wasm', 'wasm/litert_wasm_compat_internal.js', 'wasm/litert_wasm_compat_internal.wasm']
  }
}

export interface FittedRuntime {
  package: string
  bytesBefore: number
  bytesAfter: number
  /** the native binaries kept, relative to node_modules */
  binaries: string[]
}

async function bytesUnder (path: string): Promise<number> {
  const s = await stat(path).catch(() => undefined)
  if (s == null) return 0
  if (!s.isDirectory()) return s.size
  let total = 0
  for (const e of await readdir(path)) total += await bytesUnder(join(path, e))
  return total
}

/** Remove everything under `dir` that is not in `keep` nor on the way to it. */
async function pruneTo (pkgDir: string, dir: string, keep: string[]): Promise<void> {
  for (const e of await readdir(join(pkgDir, dir), { withFileTypes: true })) {
    const rel = `${dir}/${e.name}`
    if (keep.some(k => k === rel || k.startsWith(`${rel}/`))) {
      if (e.isDirectory() && !keep.includes(rel)) await pruneTo(pkgDir, rel, keep)
      continue
    }
    await rm(join(pkgDir, rel), { recursive: true, force: true })
  }
}

/** Fit the model runtimes in an image's node_modules to `arch`; reports sizes before and after. */
export async function fitModelRuntimes (nodeModules: string, arch: Arch): Promise<FittedRuntime[]> {
  const fitted: FittedRuntime[] = []
  for (const [name, layout] of Object.entries(MODEL_RUNTIME_LAYOUTS)) {
    const dir = join(nodeModules, name)
    if (await stat(dir).catch(() => undefined) == null) continue
    const bytesBefore = await bytesUnder(dir)
    const keep = layout.keep(arch)
    for (const p of layout.prune) {
      if (await stat(join(dir, p)).catch(() => undefined) != null) await pruneTo(dir, p, keep)
    }
    const native = layout.native?.(arch)
    const binaries = native == null ? [] : (await readdir(join(dir, native)).catch(() => [])).filter(f => f.endsWith('.node')).map(f => `${name}/${native}/${f}`)
    fitted.push({ package: name, bytesBefore, bytesAfter: await bytesUnder(dir), binaries })
  }
  return fitted
}
