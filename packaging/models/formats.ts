import { open, readdir } from 'node:fs/promises'
import { extname, join } from 'node:path'
import { ModelFormatError } from './errors.ts'
import { isTflite } from './tflite-file.ts'
import type { ModelFormat } from '../manifest.ts'

/** The file a model directory is entered by, when none is named: model.json, or its one .onnx or .tflite file. */
export async function findModelFile (dir: string): Promise<string> {
  let names: string[]
  try {
    names = await readdir(dir)
  } catch (err: any) {
    throw new ModelFormatError(`${dir}: cannot read the model folder: ${err.code ?? err.message}`, { cause: err })
  }
  if (names.includes('model.json')) return 'model.json'
  const models = names.filter(n => /\.(onnx|tflite)$/i.test(n))
  if (models.length === 1) return models[0]!
  if (models.length > 1) throw new ModelFormatError(`${dir}: holds several models (${models.join(', ')}); name the one to bundle`)
  throw new ModelFormatError(`${dir}: holds no model: a TensorFlow.js model.json, an .onnx or a .tflite file`)
}

/**
 * The format of a model file, by its name and checked against its first
 * bytes: `.onnx` (ONNX protobuf), `.tflite` (TFL3 flatbuffer), or a
 * TensorFlow.js `model.json` (layers or graph, read from the file).
 */
export async function formatOf (dir: string, file: string): Promise<ModelFormat> {
  const ext = extname(file).toLowerCase()
  const head = await readHead(join(dir, file))
  if (ext === '.tflite') {
    if (!isTflite(head)) throw new ModelFormatError(`${file}: is not a TensorFlow Lite model (no TFL3 identifier)`)
    return 'tflite'
  }
  if (ext === '.onnx') {
    // an ONNX model is a protobuf ModelProto, whose fields start with a small tag byte (ir_version is field 1: 0x08)
    if (head.length === 0 || head[0] === 0x7b || isTflite(head)) throw new ModelFormatError(`${file}: is not an ONNX model`)
    return 'onnx'
  }
  if (ext === '.json') {
    const { tfjsFormatOf } = await import('./tfjs.ts')
    const { readFile } = await import('node:fs/promises')
    let json: unknown
    try {
      json = JSON.parse(await readFile(join(dir, file), 'utf8'))
    } catch (err: any) {
      throw new ModelFormatError(`${file}: is not JSON: ${err.message}`, { cause: err })
    }
    if (json == null || typeof json !== 'object' || Array.isArray(json)) throw new ModelFormatError(`${file}: is not a TensorFlow.js model.json`)
    return tfjsFormatOf(json as Parameters<typeof tfjsFormatOf>[0])
  }
  throw new ModelFormatError(`${file}: unknown model format; use a TensorFlow.js model.json, an .onnx or a .tflite file`)
}

async function readHead (path: string): Promise<Uint8Array> {
  let fh
  try {
    fh = await open(path, 'r')
  } catch (err: any) {
    throw new ModelFormatError(`${path}: cannot read: ${err.code ?? err.message}`, { cause: err })
  }
  try {
    const buf = Buffer.alloc(16)
    const { bytesRead } = await fh.read(buf, 0, 16, 0)
    return buf.subarray(0, bytesRead)
  } finally {
    await fh.close()
  }
}
