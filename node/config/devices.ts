import { compile, describeError } from '../../protocols/schema.ts'
import { GpioActuatorSchema, SENSOR_SCHEMAS } from '../../sensors/schema.ts'
import { ConfigError } from './config.ts'

/**
 * Check `sensors` and `actuators` one entry at a time against the schema of
 * its own type, before the whole config is validated: against the union an
 * error could only say "must match a schema in anyOf"; this way it names the
 * field, e.g. `config.sensors[1].baudRate`. Fills each entry's defaults
 * (the caller passes a copy) and refuses duplicate ids.
 */
export function checkDevices (config: Record<string, unknown>): void {
  const ids = new Set<string>()
  const list = (name: string): unknown[] => {
    const v = config[name]
    if (v === undefined) return []
    if (!Array.isArray(v)) throw new ConfigError(`config.${name}: must be array`, `config.${name}`)
    return v
  }
  list('sensors').forEach((spec, i) => {
    const where = `config.sensors[${i}]`
    const type = (spec as { type?: unknown } | null)?.type
    const schema = typeof type === 'string' ? SENSOR_SCHEMAS[type] : undefined
    if (schema == null) throw new ConfigError(`${where}.type: must be one of ${Object.keys(SENSOR_SCHEMAS).join(', ')}`, `${where}.type`)
    check(schema, spec, where)
    unique(ids, (spec as { id: string }).id, where)
  })
  list('actuators').forEach((spec, i) => {
    const where = `config.actuators[${i}]`
    check(GpioActuatorSchema, spec, where)
    unique(ids, (spec as { id: string }).id, where)
  })
}

function check (schema: Parameters<typeof compile>[0], spec: unknown, where: string): void {
  const validate = compile(schema)
  // validates in place, filling the entry's defaults
  if (!validate(spec)) {
    const { field, message } = describeError(where, validate.errors)
    throw new ConfigError(message, field)
  }
}

function unique (ids: Set<string>, id: string, where: string): void {
  if (ids.has(id)) throw new ConfigError(`${where}.id: "${id}" is used by another sensor or actuator`, `${where}.id`)
  ids.add(id)
}
