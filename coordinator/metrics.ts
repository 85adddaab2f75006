import { Counter, Gauge, Histogram, Registry as PromRegistry } from 'prom-client'

/**
 * The coordinator's own Prometheus metrics. `/metrics` serves them together
 * with the embedded agent's (mesh, registry, process).
 */
export class CoordinatorMetrics {
  readonly registry = new PromRegistry()
  readonly logins: Counter<'result'>
  readonly passwordChecks: Counter
  readonly requests: Histogram<'method' | 'route' | 'status'>
  readonly eventStreams: Gauge
  readonly logSearches: Counter<'kind'>
  readonly enrollments: Counter<'result'>
  readonly users: Gauge

  constructor (init: { users?: () => number } = {}) {
    const registers = [this.registry]
    this.logins = new Counter({ name: 'gatemesh_coordinator_logins_total', help: 'Login attempts by result (success, failure, limited)', labelNames: ['result'], registers })
    this.passwordChecks = new Counter({ name: 'gatemesh_coordinator_password_checks_total', help: 'Passwords checked against their hash (scrypt): what the login limits keep an attacker from spending', registers })
    this.requests = new Histogram({
      name: 'gatemesh_coordinator_http_request_duration_seconds',
      help: 'API request durations by method, route and status',
      labelNames: ['method', 'route', 'status'],
      buckets: [0.001, 0.005, 0.02, 0.1, 0.5, 2, 10],
      registers
    })
    this.eventStreams = new Gauge({ name: 'gatemesh_coordinator_event_streams', help: 'Open Server-Sent Event streams', registers })
    this.logSearches = new Counter({ name: 'gatemesh_coordinator_log_searches_total', help: 'Mesh-wide log searches and downloads', labelNames: ['kind'], registers })
    this.enrollments = new Counter({ name: 'gatemesh_coordinator_enrollments_total', help: 'Join token redemptions by result', labelNames: ['result'], registers })
    const count = init.users
    this.users = new Gauge({ name: 'gatemesh_coordinator_users', help: 'Users', registers, collect () { if (count != null) this.set(count()) } })
  }

  async render (others: PromRegistry[] = []): Promise<{ contentType: string, body: string }> {
    const merged = PromRegistry.merge([this.registry, ...others])
    return { contentType: merged.contentType, body: await merged.metrics() }
  }
}
