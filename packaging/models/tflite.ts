import { readFile } from 'node:fs/promises'
import { ModelFormatError } from './errors.ts'
import { loadLiteRt, type LiteRt } from './litert.ts'
import { concatRows, padRows, sliceRows, type DType, type WireTensor } from './tensor.ts'
import { fixBatch, isTflite } from './tflite-file.ts'
import type { TensorSpec } from '../manifest.ts'
import type { ModelRunner, OpenModelInit } from './runner.ts'
import type { CompiledModel } from '@litertjs/core'

const FROM_LITERT: Record<string, DType> = { float32: 'float32', int32: 'int32', uint8: 'uint8' }
const DEFAULT_MAX_BATCH = 8

function specsOf (model: CompiledModel): { inputs: TensorSpec[], outputs: TensorSpec[] } {
  const spec = (d: { name: string, dtype: string, shape: Int32Array }, what: string): TensorSpec => {
    const dtype = FROM_LITERT[d.dtype]
    if (dtype == null) throw new ModelFormatError(`${what} ${d.name}: element type ${d.dtype} is not supported by LiteRT.js (float32, int32, uint8)`)
    return { name: d.name.slice(0, 128), dtype, shape: [...d.shape].map(x => x < 0 ? -1 : x) }
  }
  return { inputs: model.getInputDetails().map(d => spec(d, 'input')), outputs: model.getOutputDetails().map(d => spec(d, 'output')) }
}

async function compile (litert: LiteRt, bytes: Uint8Array): Promise<CompiledModel> {
  try {
    return await litert.loadAndCompile(bytes, { accelerator: 'wasm' })
  } catch (err: any) {
    throw new ModelFormatError(`LiteRT cannot load this model: ${String(err?.message ?? err).slice(0, 500)}`, { cause: err })
  }
}

/**
 * A TensorFlow Lite model on LiteRT.js (XNNPACK on WebAssembly). LiteRT.js
 * compiles fixed shapes only, so batches are cut to fit: a fixed-batch
 * model (batch B in its signature) is fed B rows at a time, the last slice
 * padded with zeros; a model with a dynamic batch is compiled twice, at
 * batch 1 and at `maxBatch`, and a batch runs as whole `maxBatch` slices
 * plus the rest one row at a time (or padded, when it is most of a slice).
 */
export async function openTflite (init: OpenModelInit): Promise<ModelRunner> {
  let bytes: Uint8Array
  try {
    bytes = new Uint8Array(await readFile(init.path))
  } catch (err: any) {
    throw new ModelFormatError(`cannot read the TFLite model: ${err.message}`, { cause: err })
  }
  if (!isTflite(bytes)) throw new ModelFormatError('not a TensorFlow Lite model (no TFL3 identifier)')
  const litert = await loadLiteRt()
  const declared = await compile(litert, bytes)
  let inputs: TensorSpec[]
  let outputs: TensorSpec[]
  try {
    ({ inputs, outputs } = specsOf(declared))
  } catch (err) {
    declared.delete()
    throw err
  }
  const all = [...inputs, ...outputs]
  if (all.some(s => s.shape.length === 0)) {
    declared.delete()
    throw new ModelFormatError('a scalar input or output: gatemesh batches along the first dimension, so every tensor needs one')
  }
  const dynamic = inputs.some(s => s.shape[0] === -1)
  if (all.some(s => s.shape.slice(1).includes(-1))) {
    declared.delete()
    throw new ModelFormatError('a dimension other than the batch is dynamic; LiteRT.js runs fixed shapes only')
  }

  // slices: rows per compiled variant, largest first
  const variants: Array<{ rows: number, model: CompiledModel }> = []
  try {
    if (dynamic) {
      declared.delete()
      const big = Math.max(1, init.maxBatch ?? DEFAULT_MAX_BATCH)
      variants.push({ rows: big, model: await compile(litert, fixBatch(bytes, big)) })
      if (big > 1) variants.push({ rows: 1, model: await compile(litert, fixBatch(bytes, 1)) })
    } else {
      const rows = inputs[0]!.shape[0]!
      if (inputs.some(s => s.shape[0] !== rows) || outputs.some(s => s.shape[0] !== rows)) throw new ModelFormatError(`inputs and outputs disagree on the batch size (${all.map(s => `${s.name} [${s.shape.join(', ')}]`).join('; ')})`)
      variants.push({ rows, model: declared })
    }
  } catch (err) {
    for (const v of variants) v.model.delete()
    throw err
  }

  const runSlice = async (model: CompiledModel, slice: WireTensor[]): Promise<WireTensor[]> => {
    const feeds = slice.map((t, i) => {
      if (t.dtype !== inputs[i]!.dtype) throw new ModelFormatError(`input ${inputs[i]!.name}: expected ${inputs[i]!.dtype}, got ${t.dtype}`)
      return new litert.Tensor(t.data as Float32Array, t.shape)
    })
    try {
      const results = await model.run(feeds)
      try {
        return results.map((r, k) => ({ dtype: outputs[k]!.dtype, shape: [...r.type.layout.dimensions], data: r.toTypedArray().slice() }))
      } finally {
        for (const r of results) r.delete()
      }
    } finally {
      for (const f of feeds) f.delete()
    }
  }

  const run = async (batch: WireTensor[]): Promise<WireTensor[]> => {
    const total = batch[0]!.shape[0]!
    const parts: WireTensor[][] = []
    const [big, one] = variants as [{ rows: number, model: CompiledModel }, { rows: number, model: CompiledModel } | undefined]
    let at = 0
    while (at < total) {
      const left = total - at
      if (left >= big.rows || one == null || left * 2 > big.rows) {
        const take = Math.min(left, big.rows)
        const out = await runSlice(big.model, batch.map(t => padRows(sliceRows(t, at, at + take), big.rows)))
        parts.push(out.map(o => sliceRows(o, 0, take)))
        at += take
      } else {
        parts.push(await runSlice(one.model, batch.map(t => sliceRows(t, at, at + 1))))
        at += 1
      }
    }
    return outputs.map((_, k) => concatRows(parts.map(p => p[k]!)))
  }

  return {
    format: 'tflite',
    backend: 'litert-wasm',
    inputs,
    outputs,
    run,
    dispose: async () => { for (const v of variants) v.model.delete() }
  }
}
