import { Counter, Gauge, Histogram, type Registry as PromRegistry } from 'prom-client'
import type { OutboxMetrics } from '../outbox/outbox.ts'

/**
 * Metrics of the local runtime (sensors, inference, rules, outbox), on the
 * agent's own Prometheus registry.
 */
export class RuntimeMetrics implements OutboxMetrics {
  readonly backend: Gauge<'runtime' | 'backend'>
  readonly instances: Gauge
  readonly predictions: Counter<'model' | 'source'>
  readonly inferenceSeconds: Histogram<'model'>
  readonly batchSize: Histogram<'model'>
  readonly sensorReadings: Counter<'sensor'>
  readonly sensorRejected: Counter<'sensor' | 'reason'>
  readonly ruleFired: Counter<'model' | 'rule'>
  readonly outboxPending: Gauge
  readonly outboxDelivered: Counter<'type'>
  readonly outboxFailures: Counter<'type'>
  readonly outboxDead: Counter<'type'>
  readonly actionLatency: Histogram<'type'>

  constructor (registry: PromRegistry) {
    const registers = [registry]
    this.backend = new Gauge({ name: 'gatemesh_inference_backend', help: 'Backend of each runtime (tfjs, onnx, tflite): in use (1), or the one that would be used (0 until an instance of that runtime runs)', labelNames: ['runtime', 'backend'], registers })
    this.instances = new Gauge({ name: 'gatemesh_instances', help: 'Model instances running on this node', registers })
    this.predictions = new Counter({ name: 'gatemesh_predictions_total', help: 'Predictions made, by model and source (api, sensor)', labelNames: ['model', 'source'], registers })
    this.inferenceSeconds = new Histogram({ name: 'gatemesh_inference_seconds', help: 'Time a worker spent on one batch', labelNames: ['model'], buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1], registers })
    this.batchSize = new Histogram({ name: 'gatemesh_inference_batch_size', help: 'Instances per batch', labelNames: ['model'], buckets: [1, 2, 4, 8, 16, 32, 64, 128], registers })
    this.sensorReadings = new Counter({ name: 'gatemesh_sensor_readings_total', help: 'Readings accepted from each sensor', labelNames: ['sensor'], registers })
    this.sensorRejected = new Counter({ name: 'gatemesh_sensor_rejected_total', help: 'Garbage from each sensor, by reason (parse, nan, range)', labelNames: ['sensor', 'reason'], registers })
    this.ruleFired = new Counter({ name: 'gatemesh_rule_fired_total', help: 'Rules that fired, by model and rule', labelNames: ['model', 'rule'], registers })
    this.outboxPending = new Gauge({ name: 'gatemesh_outbox_pending', help: 'Actions and notifications waiting for delivery', registers })
    this.outboxDelivered = new Counter({ name: 'gatemesh_outbox_delivered_total', help: 'Deliveries that succeeded, by action type', labelNames: ['type'], registers })
    this.outboxFailures = new Counter({ name: 'gatemesh_outbox_failed_attempts_total', help: 'Delivery attempts that failed, by action type', labelNames: ['type'], registers })
    this.outboxDead = new Counter({ name: 'gatemesh_outbox_dead_letters_total', help: 'Jobs given up on, by action type', labelNames: ['type'], registers })
    this.actionLatency = new Histogram({ name: 'gatemesh_action_latency_seconds', help: 'From the triggering reading or request to delivery', labelNames: ['type'], buckets: [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5, 30, 300], registers })
  }

  setBackend (runtime: string, backend: string, inUse: boolean): void {
    for (const b of ['tensorflow', 'wasm', 'cpu', 'onnx-native', 'onnx-wasm', 'litert-wasm']) if (b !== backend) this.backend.remove({ runtime, backend: b })
    this.backend.set({ runtime, backend }, inUse ? 1 : 0)
  }
}
