import { ModelFormatError } from './errors.ts'

/**
 * Just enough of the TensorFlow Lite flatbuffer (schema.fbs) to give a model
 * with a dynamic batch dimension a fixed one: LiteRT.js compiles only fixed
 * shapes. Every offset is checked against the file, since the file comes
 * from a user.
 */

const FILE_ID = 'TFL3'
// field indexes in schema.fbs
const MODEL_SUBGRAPHS = 2
const SUBGRAPH_TENSORS = 0
const TENSOR_SHAPE = 0
const TENSOR_SHAPE_SIGNATURE = 7
/** tensors per subgraph and subgraphs per model we read at most */
const MAX_VECTOR = 1_000_000

class Reader {
  readonly #view: DataView
  constructor (bytes: Uint8Array) {
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  }

  #check (at: number, bytes: number): void {
    if (!Number.isInteger(at) || at < 0 || at + bytes > this.#view.byteLength) throw new ModelFormatError(`not a TensorFlow Lite model: an offset (${at}) points outside the file`)
  }

  u16 (at: number): number { this.#check(at, 2); return this.#view.getUint16(at, true) }
  u32 (at: number): number { this.#check(at, 4); return this.#view.getUint32(at, true) }
  i32 (at: number): number { this.#check(at, 4); return this.#view.getInt32(at, true) }
  setI32 (at: number, v: number): void { this.#check(at, 4); this.#view.setInt32(at, v, true) }

  /** Where field `index` of the table at `table` is, or undefined when absent. */
  field (table: number, index: number): number | undefined {
    const vtable = table - this.i32(table)
    const length = this.u16(vtable)
    const slot = 4 + index * 2
    if (slot + 2 > length) return undefined
    const offset = this.u16(vtable + slot)
    return offset === 0 ? undefined : table + offset
  }

  ref (at: number): number { return at + this.u32(at) }

  /** A vector field: its length and where its first element is. */
  vector (table: number, index: number): { length: number, start: number } | undefined {
    const at = this.field(table, index)
    if (at == null) return undefined
    const vec = this.ref(at)
    const length = this.u32(vec)
    if (length > MAX_VECTOR) throw new ModelFormatError(`not a TensorFlow Lite model: a vector of ${length} entries`)
    this.#check(vec + 4, length * 4)
    return { length, start: vec + 4 }
  }
}

/** Whether the bytes carry the TFLite flatbuffer identifier. */
export function isTflite (bytes: Uint8Array): boolean {
  return bytes.byteLength >= 8 && new TextDecoder().decode(bytes.subarray(4, 8)) === FILE_ID
}

/**
 * A copy of the model in which every dynamic batch dimension (`-1` first in
 * a tensor's shape signature) is `batch`. A `-1` anywhere else cannot be
 * fixed this way and is refused.
 */
export function fixBatch (bytes: Uint8Array, batch: number): Uint8Array {
  if (!isTflite(bytes)) throw new ModelFormatError('not a TensorFlow Lite model (no TFL3 identifier)')
  const copy = new Uint8Array(bytes)
  const r = new Reader(copy)
  const model = r.ref(0)
  const subgraphs = r.vector(model, MODEL_SUBGRAPHS)
  for (let s = 0; s < (subgraphs?.length ?? 0); s++) {
    const subgraph = r.ref(subgraphs!.start + 4 * s)
    const tensors = r.vector(subgraph, SUBGRAPH_TENSORS)
    for (let t = 0; t < (tensors?.length ?? 0); t++) {
      const tensor = r.ref(tensors!.start + 4 * t)
      const signature = r.vector(tensor, TENSOR_SHAPE_SIGNATURE)
      if (signature == null) continue
      const shape = r.vector(tensor, TENSOR_SHAPE)
      for (let d = 0; d < signature.length; d++) {
        if (r.i32(signature.start + 4 * d) !== -1) continue
        if (d !== 0) throw new ModelFormatError(`a tensor has a dynamic dimension ${d} (shape signature); LiteRT.js runs models whose only dynamic dimension is the batch`)
        r.setI32(signature.start, batch)
        if (shape != null && shape.length === signature.length) r.setI32(shape.start, batch)
      }
    }
  }
  return copy
}
