import type { Reading } from '../../sensors/sensor.ts'
import type { InputSpec, Preprocess } from './spec.ts'

/**
 * Turns sensor readings into model inputs: a sliding window per sensor —
 * the last `size` readings, or the last `ms` milliseconds resampled to
 * `size` evenly spaced points — preprocessed, and emitted every `stride`
 * readings of the first sensor once every window is full.
 */
export class SensorWindow {
  readonly #spec: InputSpec
  readonly #buffers = new Map<string, Reading[]>()
  #sinceEmit = 0

  constructor (spec: InputSpec) {
    this.#spec = spec
    for (const id of spec.sensors) this.#buffers.set(id, [])
  }

  /** Add a reading; returns the model input (`size` values, or `size` × sensors) when one is due. */
  push (reading: Reading): number[] | number[][] | undefined {
    const buf = this.#buffers.get(reading.sensorId)
    if (buf == null) return undefined
    const { size, ms } = this.#spec.window
    // a reading stamped before the ones held: the wall clock stepped back (NTP,
    // a clock fixed by hand). Those held are from the clock that was ahead; kept,
    // a time window would never cover them, emit nothing and grow until the
    // wall clock caught up. The window refills from this reading on.
    if (ms != null) while (buf.length > 0 && buf[buf.length - 1]!.ts > reading.ts) buf.pop()
    buf.push(reading)
    if (ms == null) {
      if (buf.length > size) buf.splice(0, buf.length - size)
    } else {
      const cutoff = reading.ts - ms
      let drop = 0
      while (drop < buf.length && buf[drop]!.ts < cutoff) drop++
      // keep one reading before the window so interpolation covers its start
      if (drop > 1) buf.splice(0, drop - 1)
    }
    if (reading.sensorId !== this.#spec.sensors[0]) return undefined
    this.#sinceEmit++
    const series: number[][] = []
    for (const id of this.#spec.sensors) {
      const values = this.#series(this.#buffers.get(id)!, reading.ts)
      if (values == null) return undefined
      series.push(values.map(v => preprocess(v, this.#spec.preprocess)))
    }
    if (this.#sinceEmit < this.#spec.window.stride) return undefined
    this.#sinceEmit = 0
    if (series.length === 1) return series[0]!
    return series[0]!.map((_, t) => series.map(s => s[t]!))
  }

  /** The raw readings of one sensor's window: what a notification should quote, e.g. the peak. */
  stats (sensorId: string): { min: number, max: number, mean: number, size: number } | undefined {
    const buf = this.#buffers.get(sensorId)
    if (buf == null || buf.length === 0) return undefined
    const values = buf.map(r => r.value)
    return { min: Math.min(...values), max: Math.max(...values), mean: values.reduce((a, b) => a + b, 0) / values.length, size: values.length }
  }

  #series (buf: Reading[], now: number): number[] | undefined {
    const { size, ms } = this.#spec.window
    if (ms == null) return buf.length < size ? undefined : buf.map(r => r.value)
    if (buf.length < 2 || buf[0]!.ts > now - ms) return undefined
    return resample(buf, now - ms, now, size)
  }
}

/** Linear interpolation of readings at `n` evenly spaced times in [from, to]. */
export function resample (buf: Reading[], from: number, to: number, n: number): number[] {
  const out: number[] = []
  let j = 0
  for (let i = 0; i < n; i++) {
    const t = n === 1 ? to : from + (to - from) * i / (n - 1)
    while (j < buf.length - 2 && buf[j + 1]!.ts < t) j++
    const a = buf[j]!
    const b = buf[j + 1] ?? a
    const f = b.ts === a.ts ? 1 : Math.min(1, Math.max(0, (t - a.ts) / (b.ts - a.ts)))
    out.push(a.value + (b.value - a.value) * f)
  }
  return out
}

export function preprocess (x: number, steps: Preprocess[]): number {
  let v = x
  for (const s of steps) {
    if (s.op === 'scale') v = (v - s.min!) / (s.max! - s.min!)
    else if (s.op === 'standardize') v = (v - s.mean!) / s.std!
    else v = Math.min(s.max!, Math.max(s.min!, v))
  }
  return v
}
