/**
 * The chaos run's steady workload: predict clients through the agents and
 * the coordinator (each anomaly answered is a notification the receivers
 * must get exactly once), and deployments created, changed and deleted.
 */
import { SCALE, temperatures } from '../helpers/anomaly-bundle.ts'
import { deploy, undeploy } from '../helpers/scheduling.ts'
import { prng } from '../../sensors/simulated.ts'
import type { ChaosLab } from './lab.ts'

export interface PredictRecord {
  via: string
  at: number
  ok: boolean
  /** during a fault */
  faulted: boolean
  status?: number
  /** the answered row as JSON: what the notification's event carries as `output` */
  row?: string
  anomaly?: boolean
  error?: string
}

export interface ChurnRecord {
  op: 'create' | 'change' | 'delete'
  id: string
  via: string
  ok: boolean
  error?: string
}

const scaled = (xs: number[]): number[] => xs.map(v => (v - SCALE.min) / (SCALE.max - SCALE.min))

export class Workload {
  readonly predicts: PredictRecord[] = []
  readonly churn: ChurnRecord[] = []
  readonly #lab: ChaosLab
  readonly #faulted: () => boolean
  readonly #rand: () => number
  #stopped = false
  #seq = 0
  readonly #wakers = new Set<() => void>()
  readonly #loops: Array<Promise<void>> = []

  constructor (lab: ChaosLab, seed: number, faulted: () => boolean) {
    this.#lab = lab
    this.#rand = prng(seed ^ 0x9e3779b9)
    this.#faulted = faulted
  }

  start (): void {
    this.#loops.push(this.#predictLoop('agents'), this.#predictLoop('coordinator'), this.#churnLoop())
  }

  async stop (): Promise<void> {
    this.#stopped = true
    for (const wake of [...this.#wakers]) wake()
    await Promise.all(this.#loops)
  }

  /** Sleep `ms`, or less if stopped meanwhile. */
  async #pause (ms: number): Promise<void> {
    if (this.#stopped) return
    await new Promise<void>(resolve => {
      const done = (): void => { clearTimeout(timer); this.#wakers.delete(done); resolve() }
      const timer = setTimeout(done, ms)
      this.#wakers.add(done)
    })
  }

  /** One window per request, each with a spike of its own size: every answer's row differs, so it names its notification. */
  #body (): { instances: number[][] } {
    const n = this.#seq++
    return { instances: [scaled(temperatures(21, 9 + ((n * 0.6180339887) % 1) * 9))] }
  }

  async #predictLoop (through: 'agents' | 'coordinator'): Promise<void> {
    const lab = this.#lab
    while (!this.#stopped) {
      const via = through === 'coordinator' ? 'coordinator' : lab.agents[Math.floor(this.#rand() * lab.agents.length)]!
      const body = this.#body()
      const record: PredictRecord = { via, at: Date.now(), ok: false, faulted: this.#faulted() }
      try {
        const reply = via === 'coordinator'
          ? await lab.coordinatorProbe.request('POST', `${lab.coordinatorApi}/api/v1/models/notify:predict`, body, { authorization: `Bearer ${lab.coordinatorToken}` })
          : await lab.cluster.request(via, 'POST', '/v1/models/notify:predict', body)
        record.status = reply.status
        const row = reply.body?.predictions?.[0]
        if (reply.status === 200 && Array.isArray(row)) {
          record.ok = true
          record.row = JSON.stringify(row)
          record.anomaly = row[1] > row[0]
        } else {
          record.error = `${reply.status} ${String(reply.body?.code ?? '')} ${String(reply.body?.message ?? '').slice(0, 120)}`
        }
      } catch (err: any) {
        record.error = String(err.message ?? err).slice(0, 160)
      }
      record.faulted ||= this.#faulted()
      this.predicts.push(record)
      await this.#pause(record.ok ? 150 : 500)
    }
  }

  /** Every 6–14 s: a deployment created (1–2 replicas), one changed, one deleted; at most two live. */
  async #churnLoop (): Promise<void> {
    const lab = this.#lab
    const live = new Map<string, number>()
    let next = 0
    while (!this.#stopped) {
      await this.#pause(6000 + this.#rand() * 8000)
      if (this.#stopped) break
      const via = lab.agents[Math.floor(this.#rand() * lab.agents.length)]!
      const ids = [...live.keys()]
      const op: ChurnRecord['op'] = ids.length === 0 ? 'create' : ids.length >= 2 ? (this.#rand() < 0.5 ? 'change' : 'delete') : (['create', 'change', 'delete'] as const)[Math.floor(this.#rand() * 3)]!
      const id = op === 'create' ? `churn-${next++}` : ids[Math.floor(this.#rand() * ids.length)]!
      const record: ChurnRecord = { op, id, via, ok: false }
      try {
        if (op === 'delete') {
          await undeploy(lab.cluster, via, id)
          live.delete(id)
        } else {
          const replicas = op === 'create' ? 1 : 3 - (live.get(id) ?? 1)
          await deploy(lab.cluster, via, { id, model: { name: 'anomaly', version: '1.0.0' }, replicas, placement: { policy: 'least-loaded' }, instance: { name: id } })
          live.set(id, replicas)
        }
        record.ok = true
      } catch (err: any) {
        record.error = String(err.message ?? err).slice(0, 160)
      }
      this.churn.push(record)
    }
  }
}
