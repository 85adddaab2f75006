import { Type, type Static } from '@sinclair/typebox'
import { DTYPES } from './models/tensor.ts'

export { DTYPES }

/**
 * `manifest.json` of a model bundle: the contract between the bundle
 * builder, the store, the transfer protocol and the runtime.
 */

/**
 * The model formats a bundle may carry, each run by its own runtime:
 * TensorFlow.js layers and graph models (`model.json` + weight shards),
 * ONNX (`.onnx`, ONNX Runtime) and TensorFlow Lite (`.tflite`, LiteRT).
 */
export const MODEL_FORMATS = ['tfjs-layers', 'tfjs-graph', 'onnx', 'tflite'] as const
export type ModelFormat = typeof MODEL_FORMATS[number]

/** The runtime family of each format, as `manifest.runtime` names it. */
export const RUNTIME_OF: Record<ModelFormat, 'tfjs' | 'onnx' | 'tflite'> = { 'tfjs-layers': 'tfjs', 'tfjs-graph': 'tfjs', onnx: 'onnx', tflite: 'tflite' }

/** Formats of bundles built before ONNX and TFLite, still read (as tfjs-layers, tfjs-graph). */
export const LEGACY_FORMATS: Record<string, ModelFormat> = { layers: 'tfjs-layers', graph: 'tfjs-graph' }

/** One input or output tensor. `-1` in a shape means any size (the batch dimension, usually). */
export const TensorSpecSchema = Type.Object({
  name: Type.String({ minLength: 1, maxLength: 128 }),
  dtype: Type.Union(DTYPES.map(d => Type.Literal(d))),
  shape: Type.Array(Type.Integer({ minimum: -1, maximum: 1 << 24 }), { maxItems: 8 }),
  /** class names for a classifier output, index-aligned with its last dimension */
  labels: Type.Optional(Type.Array(Type.String({ maxLength: 128 }), { maxItems: 10_000 }))
}, { additionalProperties: false })

/** Bundle-relative path: no `..`, no leading `/`, no backslashes. */
export const BUNDLE_PATH_PATTERN = '^(?!/)(?!.*(^|/)\\.\\.?(/|$))[A-Za-z0-9._/-]{1,255}$'

export const FileEntrySchema = Type.Object({
  path: Type.String({ pattern: BUNDLE_PATH_PATTERN }),
  size: Type.Integer({ minimum: 0 }),
  sha256: Type.String({ pattern: '^[0-9a-f]{64}$' })
}, { additionalProperties: false })

export const ManifestSchema = Type.Object({
  schemaVersion: Type.Literal(1),
  name: Type.String({ minLength: 1, maxLength: 64, pattern: '^[a-z0-9][a-z0-9._-]*$' }),
  version: Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9.+_-]*$' }),
  /** ISO 8601 */
  createdAt: Type.String({ minLength: 10, maxLength: 40 }),
  /** `fleet`, or the name in the signing publisher's certificate */
  publisher: Type.String({ minLength: 1, maxLength: 128 }),
  /** the runtime family: `tfjs`, `onnx` or `tflite` (must agree with model.format) */
  runtime: Type.Union([Type.Literal('tfjs'), Type.Literal('onnx'), Type.Literal('tflite')]),
  model: Type.Object({
    /** one of MODEL_FORMATS; `layers` and `graph` are read as tfjs-layers and tfjs-graph */
    format: Type.Union([...MODEL_FORMATS, ...Object.keys(LEGACY_FORMATS)].map(f => Type.Literal(f))),
    /** path of the model inside the bundle: the TensorFlow.js `model.json`, the `.onnx` or the `.tflite` file */
    entry: Type.String({ pattern: BUNDLE_PATH_PATTERN })
  }, { additionalProperties: false }),
  inputs: Type.Array(TensorSpecSchema, { minItems: 1, maxItems: 32 }),
  outputs: Type.Array(TensorSpecSchema, { minItems: 1, maxItems: 32 }),
  /** path of the user's deployment defaults (`config.json`) */
  config: Type.Optional(Type.String({ pattern: BUNDLE_PATH_PATTERN })),
  /** path of the optional action script */
  action: Type.Optional(Type.String({ pattern: BUNDLE_PATH_PATTERN })),
  files: Type.Array(FileEntrySchema, { minItems: 1, maxItems: 10_000 })
}, { additionalProperties: false })

export type TensorSpec = Static<typeof TensorSpecSchema>
export type FileEntry = Static<typeof FileEntrySchema>
/** A manifest as read: `model.format` normalised to one of MODEL_FORMATS. */
export type Manifest = Omit<Static<typeof ManifestSchema>, 'model'> & { model: { format: ModelFormat, entry: string } }
