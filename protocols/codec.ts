import type { Static, TSchema } from '@sinclair/typebox'
import { InvalidMessageError, MalformedMessageError, MessageTooDeepError, MessageTooLargeError, UnsupportedVersionError } from './errors.ts'
import { jsonDepth } from './json-bounds.ts'
import { compile, describeError } from './schema.ts'

export interface JsonCodecInit<S extends TSchema> {
  /** Used in error messages, e.g. `registry-sync`. */
  name: string
  /** Written as the first byte of every frame. */
  version: number
  schema: S
  /** Largest encoded frame, version byte included. */
  maxBytes: number
  /** Deepest nesting of arrays and objects a frame may have. @default DEFAULT_MAX_DEPTH */
  maxDepth?: number
}

/** Deep enough for every message of ours; far too shallow to overflow a stack. */
export const DEFAULT_MAX_DEPTH = 64

const encoder = new TextEncoder()
const decoder = new TextDecoder('utf-8', { fatal: true })

/**
 * A versioned JSON codec: one version byte, then UTF-8 JSON validated against
 * a schema. Every decode failure is a typed `ProtocolMessageError`; nothing a
 * peer sends can make it throw anything else.
 */
export class JsonCodec<S extends TSchema> {
  readonly name: string
  readonly version: number
  readonly maxBytes: number
  readonly maxDepth: number
  readonly #validate
  readonly #schema: S

  constructor (init: JsonCodecInit<S>) {
    this.name = init.name
    this.version = init.version
    this.maxBytes = init.maxBytes
    this.maxDepth = init.maxDepth ?? DEFAULT_MAX_DEPTH
    this.#schema = init.schema
    this.#validate = compile(init.schema)
  }

  encode (message: Static<S>): Uint8Array {
    const body = encoder.encode(JSON.stringify(message))
    if (body.byteLength + 1 > this.maxBytes) {
      throw new MessageTooLargeError(`${this.name}: message of ${body.byteLength + 1} bytes exceeds ${this.maxBytes}`)
    }
    const out = new Uint8Array(body.byteLength + 1)
    out[0] = this.version
    out.set(body, 1)
    return out
  }

  decode (data: Uint8Array | { subarray(): Uint8Array }): Static<S> {
    const bytes = data instanceof Uint8Array ? data : data.subarray()
    if (bytes.byteLength > this.maxBytes) {
      throw new MessageTooLargeError(`${this.name}: message of ${bytes.byteLength} bytes exceeds ${this.maxBytes}`)
    }
    if (bytes.byteLength < 2) throw new MalformedMessageError(`${this.name}: message is truncated`)
    if (bytes[0] !== this.version) {
      throw new UnsupportedVersionError(`${this.name}: version ${bytes[0]} is not supported (want ${this.version})`)
    }
    let text: string
    try {
      text = decoder.decode(bytes.subarray(1))
    } catch (err) {
      throw new MalformedMessageError(`${this.name}: not valid UTF-8`, { cause: err })
    }
    // bounded before anything (the schema validator included) walks it
    if (jsonDepth(text, this.maxDepth) > this.maxDepth) throw new MessageTooDeepError(`${this.name}: message nests deeper than ${this.maxDepth} levels`)
    let value: unknown
    try {
      value = JSON.parse(text)
    } catch (err) {
      throw new MalformedMessageError(`${this.name}: not valid JSON`, { cause: err })
    }
    if (!this.#validate(value)) {
      const { field, message } = describeError(this.name, this.#validate.errors)
      throw new InvalidMessageError(message, field)
    }
    return value
  }

  get schema (): S {
    return this.#schema
  }
}
