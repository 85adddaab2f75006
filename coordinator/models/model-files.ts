import { createWriteStream } from 'node:fs'
import { mkdir, open, readFile, rename, stat } from 'node:fs/promises'
import { dirname, join, posix } from 'node:path'
import { Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import yauzl, { type Entry } from 'yauzl'
import { BadRequestError, UploadTooLargeError } from '../errors.ts'

/** A file part of a multipart upload, already on disk in the request's staging directory. */
export interface UploadedFile {
  /** the form field it came in */
  field: string
  /** the name the client gave it (no directories) */
  filename: string
  path: string
  size: number
}

export interface ModelFilesLimits {
  /** bytes the model may take once unzipped */
  maxBytes: number
  /** files in a model zip @default DEFAULT_MAX_ZIP_ENTRIES */
  maxEntries?: number
}

export const DEFAULT_MAX_ZIP_ENTRIES = 1000
export const MODEL_JSON = 'model.json'
/** Single-file model formats: ONNX and TensorFlow Lite. */
const SINGLE_FILE_MODEL = /\.(onnx|tflite)$/i
const isModelEntry = (name: string): boolean => name === MODEL_JSON || SINGLE_FILE_MODEL.test(name)
/** Names of uploaded files: no directories, no leading dot. */
export const FILE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/
const SEGMENT_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/
const S_IFMT = 0o170000
const S_IFREG = 0o100000
const FIELD = 'body.model'

const bad = (message: string): BadRequestError => new BadRequestError(`${FIELD}: ${message}`, { field: FIELD })

async function isZip (file: UploadedFile): Promise<boolean> {
  if (file.filename.toLowerCase().endsWith('.zip')) return true
  const fh = await open(file.path, 'r')
  try {
    const head = Buffer.alloc(4)
    await fh.read(head, 0, 4, 0)
    return head.equals(Buffer.from([0x50, 0x4b, 0x03, 0x04]))
  } finally {
    await fh.close()
  }
}

/**
 * Lay out an uploaded model in `dir`: a TensorFlow.js model (model.json and
 * the weight shards it lists), one `.onnx` or one `.tflite` file — sent as
 * files or as one zip holding them, possibly inside a folder. Checks the
 * upload is whole (every shard a model.json lists came too, nothing beside
 * a single-file model); a bad upload is a 400 naming `body.model`. Returns
 * the model's entry file.
 */
export async function placeModelFiles (files: UploadedFile[], dir: string, limits: ModelFilesLimits): Promise<string> {
  if (files.length === 0) throw bad('is required: a TensorFlow.js model.json with its weight files, an .onnx or a .tflite file, or a zip of them')
  await mkdir(dir, { recursive: true })
  let names: string[]
  if (files.length === 1 && await isZip(files[0]!)) {
    names = await unzipModel(files[0]!.path, dir, limits)
  } else {
    const seen = new Set<string>()
    for (const f of files) {
      if (!FILE_NAME_RE.test(f.filename)) throw bad(`file name "${f.filename}" must be letters, digits and ._- (no folders)`)
      if (seen.has(f.filename)) throw bad(`${f.filename} was sent twice`)
      seen.add(f.filename)
      await rename(f.path, join(dir, f.filename))
    }
    names = [...seen]
  }
  const entries = names.filter(n => !n.includes('/') && isModelEntry(n))
  if (entries.length !== 1) {
    throw bad(entries.length === 0
      ? `holds no model: send a TensorFlow.js ${MODEL_JSON} with its weight files, an .onnx or a .tflite file`
      : `holds ${entries.length} models (${entries.join(', ')}); upload one at a time`)
  }
  const entry = entries[0]!
  if (entry === MODEL_JSON) {
    await checkWeights(dir)
  } else if (names.length > 1) {
    throw bad(`a ${entry.split('.').pop()!.toLowerCase()} model is one file; remove ${names.filter(n => n !== entry).join(', ')}`)
  }
  return entry
}

/** model.json must be a TF.js model whose every weight file is present. */
async function checkWeights (dir: string): Promise<void> {
  let text: string
  try {
    text = await readFile(join(dir, MODEL_JSON), 'utf8')
  } catch {
    throw bad(`needs a ${MODEL_JSON} (the TensorFlow.js model), with its weight files`)
  }
  let json: { modelTopology?: unknown, weightsManifest?: Array<{ paths?: unknown }> }
  try {
    json = JSON.parse(text)
  } catch (err: any) {
    throw bad(`${MODEL_JSON} is not JSON: ${err.message}`)
  }
  if (json == null || typeof json !== 'object' || json.modelTopology == null) throw bad(`${MODEL_JSON} is not a TensorFlow.js model (no modelTopology)`)
  for (const group of json.weightsManifest ?? []) {
    for (const p of Array.isArray(group?.paths) ? group.paths : []) {
      const path = posix.normalize(String(p))
      if (path.startsWith('/') || path.split('/').some(s => !SEGMENT_RE.test(s))) throw bad(`${MODEL_JSON} lists the weight file "${String(p)}", which is not a plain relative name`)
      try {
        if (!(await stat(join(dir, path))).isFile()) throw new Error('not a file')
      } catch {
        throw bad(`${MODEL_JSON} lists the weight file ${path}, which was not uploaded`)
      }
    }
  }
}

/**
 * Extract the folder of a zip that holds its one model (model.json, .onnx
 * or .tflite); returns the files extracted, relative to `dir`. Names are
 * checked before anything is written (no absolute paths, `..`, links or
 * odd characters), and sizes are counted as they decompress, so a zip bomb
 * stops at the limit whatever its headers claim.
 */
async function unzipModel (zipPath: string, dir: string, limits: ModelFilesLimits): Promise<string[]> {
  let zip: yauzl.ZipFile
  try {
    zip = await yauzl.openPromise(zipPath, { lazyEntries: true, decodeStrings: true, validateEntrySizes: true, autoClose: false, strictFileNames: true })
  } catch (err: any) {
    throw bad(`not a readable zip: ${err.message}`)
  }
  try {
    const maxEntries = limits.maxEntries ?? DEFAULT_MAX_ZIP_ENTRIES
    if (zip.entryCount > maxEntries) throw bad(`the zip has ${zip.entryCount} entries, more than ${maxEntries}`)
    const entries: Entry[] = []
    try {
      for await (const entry of zip.eachEntry()) entries.push(entry)
    } catch (err: any) {
      throw bad(`the zip's directory is unreadable: ${err.message}`)
    }
    const files = entries.filter(e => !e.fileName.endsWith('/') && !e.fileName.startsWith('__MACOSX/'))
    for (const e of files) {
      const segments = e.fileName.split('/')
      if (e.fileName.startsWith('/') || segments.some(s => !SEGMENT_RE.test(s))) throw bad(`zip entry "${e.fileName}": names must be relative paths of letters, digits and ._-`)
      const type = ((e.externalFileAttributes >>> 16) & 0xffff) & S_IFMT
      if (type !== 0 && type !== S_IFREG) throw bad(`zip entry ${e.fileName}: only regular files are allowed`)
      if (e.isEncrypted()) throw bad(`zip entry ${e.fileName}: encrypted entries are not supported`)
    }
    const roots = files.filter(e => isModelEntry(posix.basename(e.fileName)))
    if (roots.length !== 1) throw bad(`the zip must hold exactly one model (${MODEL_JSON}, .onnx or .tflite); it holds ${roots.length}`)
    const base = posix.dirname(roots[0]!.fileName)
    const prefix = base === '.' ? '' : `${base}/`
    let total = 0
    const extracted: string[] = []
    for (const e of files) {
      if (!e.fileName.startsWith(prefix)) continue
      extracted.push(e.fileName.slice(prefix.length))
      const target = join(dir, e.fileName.slice(prefix.length))
      await mkdir(dirname(target), { recursive: true })
      const counter = new Transform({
        transform (chunk: Buffer, _enc, cb) {
          total += chunk.byteLength
          if (total > limits.maxBytes) cb(new UploadTooLargeError(`${FIELD}: the zip expands past the upload limit of ${limits.maxBytes} bytes`, { field: FIELD }))
          else cb(null, chunk)
        }
      })
      try {
        await pipeline(await zip.openReadStreamPromise(e), counter, createWriteStream(target, { flags: 'wx', mode: 0o644 }))
      } catch (err: any) {
        if (err instanceof UploadTooLargeError || err instanceof BadRequestError) throw err
        throw bad(`zip entry ${e.fileName}: ${err.message}`)
      }
    }
    return extracted
  } finally {
    zip.close()
  }
}
