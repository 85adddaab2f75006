import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv'
import type { Static, TSchema } from '@sinclair/typebox'

/**
 * One Ajv instance for every wire and config schema in the process. Schemas
 * are compiled once and cached by object identity.
 */
const ajv = new Ajv({ allErrors: false, strict: true, useDefaults: true, coerceTypes: false })
const compiled = new WeakMap<object, ValidateFunction>()

export function compile<S extends TSchema> (schema: S): ValidateFunction<Static<S>> {
  let fn = compiled.get(schema)
  if (fn == null) {
    fn = ajv.compile(schema)
    compiled.set(schema, fn)
  }
  return fn as ValidateFunction<Static<S>>
}

/**
 * Turns the first Ajv error into `{ field, message }`, where `field` is a
 * dotted path rooted at `root` (e.g. `config.api.port`).
 */
export function describeError (root: string, errors: ErrorObject[] | null | undefined): { field: string, message: string } {
  const err = errors?.[0]
  if (err == null) return { field: root, message: `${root}: invalid` }
  let field = root + err.instancePath.replaceAll('/', '.')
  if (err.keyword === 'additionalProperties') {
    field += `.${String(err.params.additionalProperty)}`
    return { field, message: `${field}: is not an allowed field` }
  }
  if (err.keyword === 'required') {
    field += `.${String(err.params.missingProperty)}`
    return { field, message: `${field}: is required` }
  }
  return { field, message: `${field}: ${err.message ?? 'is invalid'}` }
}
