import { readFile, readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { loadFleet } from '../../node/identity/fleet.ts'
import { anomalyBundleZip, SCALE, temperatures } from '../helpers/anomaly-bundle.ts'
import { CLI, Cluster, waitFor } from '../helpers/cluster.ts'
import { Mosquitto } from '../helpers/mosquitto.ts'
import { run } from '../helpers/processes.ts'
import { HttpSink, MailSink, MqttSink } from '../helpers/receivers.ts'


// real receivers on 127.0.0.1: SMTP (smtp-server), a Twilio-style SMS gateway and webhook (HTTP), mosquitto
const mail = await MailSink.start()
const http = await HttpSink.start()
const broker = await Mosquitto.start({ persistent: true })
const mqttSink = await MqttSink.start(broker.url, 'gatemesh/#')

// one agent process, with a simulated temperature sensor that spikes every 40 readings
const cluster = await Cluster.create()
t.teardown(async () => {
  await cluster.close()
  await mqttSink.close()
  await broker.close()
  await http.stop()
  await mail.stop()
})
const gw = await cluster.addNode('gw', {
  config: {
    sensors: [{ id: 'temp1', type: 'simulated', unit: '°C', waveform: 'sine', offset: 20, amplitude: 2, periodMs: 20_000, noise: 0.1, rateHz: 20, spikes: { every: 40, magnitude: 15 }, min: -40, max: 125 }],
    notifications: {
      smtp: { host: '127.0.0.1', port: mail.port, from: 'gateway@example.test' },
      sms: { url: `${http.url}/sms`, accountSid: 'AC123', authToken: 'secret-token', from: '+15550001111' },
      mqtt: { url: broker.url }
    },
    outbox: { baseDelayMs: 200, maxDelayMs: 1000, maxAttempts: 1000 },
    scripts: { timeoutMs: 2000, maxMemoryMb: 64 }
  }
})
await cluster.start('gw')
const fleet = await loadFleet(cluster.fleetDir)
const scaled = (xs: number[]): number[] => xs.map(v => (v - SCALE.min) / (SCALE.max - SCALE.min))
const gatemesh = async (...args: string[]): Promise<string> => (await run(process.execPath, [CLI, ...args], { timeoutMs: 120_000 })).stdout

async function bundleFile (options: Omit<Parameters<typeof anomalyBundleZip>[1], 'under'>): Promise<string> {
  return (await anomalyBundleZip(fleet.privateKey, { validate: true, under: cluster.root, ...options })).out
}

const ACTION = `
const fs = require('node:fs')
let input = ''
process.stdin.on('data', d => { input += d })
process.stdin.on('end', () => {
  const e = JSON.parse(input)
  fs.writeFileSync('alert-' + Date.now() + '.json', input)
  console.log('ACTION ' + e.class + ' on ' + e.sensor + ' peak ' + e.window.max.toFixed(1))
})
`

await t.test('sensor → model → rule → email, SMS, MQTT and script; the model endpoint follows run and stop', async t => {
  const before = await cluster.request('gw', 'GET', '/v1/models/anomaly')
  t.equal(before.status, 404, 'GET /v1/models/anomaly is 404 before run')
  t.match(before.body, { error: 'Not Found', code: 'ERR_NOT_FOUND', message: /model anomaly is not deployed anywhere in the mesh/ })

  const zip = await bundleFile({
    action: ACTION,
    config: {
      input: { window: { size: 16 }, preprocess: [{ op: 'scale', ...SCALE }] },
      rules: [{
        name: 'overheat',
        when: 'class == "anomaly" && score > 0.9',
        cooldownMs: 60_000,
        actions: [
          { type: 'email', to: 'ops@example.test', subject: '{{model}}: {{class}} on {{sensor}}', text: '{{sensor}} peaked at {{window.max}} °C (score {{score}})' },
          { type: 'sms', to: '+15550009999', body: '{{model}} {{class}} {{window.max}}C' },
          { type: 'mqtt.publish', topic: 'gatemesh/{{model}}/alerts', payload: '{"score": {{score}}, "peak": {{window.max}}}' },
          { type: 'script' }
        ]
      }]
    }
  })
  const out = await gatemesh('run', zip, '--api', gw.api, '--data', gw.dir, '--sensor', 'temp1')
  t.match(out, /anomaly 1\.0\.0 running \(backend wasm, sensors temp1\)/, 'gatemesh run reports the instance')

  const after = await cluster.request('gw', 'GET', '/v1/models/anomaly')
  t.equal(after.status, 200, 'GET /v1/models/anomaly is 200 after run')
  t.same(after.body, { model_version_status: [{ version: '1.0.0', state: 'AVAILABLE', status: { error_code: 'OK', error_message: '' } }] }, 'in TF Serving\'s shape')

  await waitFor(() => mail.unique.length >= 1 && http.sms.unique.length >= 1 && mqttSink.unique.length >= 1, 'email, SMS and MQTT alerts', 30_000)
  t.match(mail.unique[0], { to: ['ops@example.test'], subject: 'anomaly: anomaly on temp1', body: /temp1 peaked at 3\d\.\d+ °C \(score (0\.9\d+|1)\)/ }, 'the email names the sensor and the peak')
  t.match(http.sms.unique[0], { to: '+15550009999', from: '+15550001111', body: /^anomaly anomaly 3\d\.\d+C$/ }, 'the SMS went through the gateway with basic auth')
  t.match(mqttSink.unique[0], { topic: 'gatemesh/anomaly/alerts' })
  t.ok(JSON.parse(mqttSink.unique[0]!.payload as string).peak > 30, 'the MQTT payload carries the spike')
  const log = async (): Promise<Array<Record<string, any>>> => (await readFile(join(gw.dir, 'logs', 'agent.log'), 'utf8')).trim().split('\n').map(l => JSON.parse(l))
  const scriptLine = await waitFor(async () => (await log()).find(l => l.msg === 'script output' && /^ACTION anomaly on temp1 peak 3\d\.\d$/.test(l.line)), 'the script\'s stdout in the agent log', 10_000)
  t.ok(scriptLine, 'the action script ran and its stdout reached the log')
  const scratch = join(gw.dir, 'scratch', 'anomaly')
  // the sandbox saves the scratch dir after the script exits, so after its stdout reached the log
  const alerts = await waitFor(async () => {
    const files = (await readdir(scratch).catch(() => [])).filter(f => f.startsWith('alert-'))
    return files.length >= 1 ? files : undefined
  }, 'the script\'s file in its scratch dir', 10_000)
  t.ok(alerts.length >= 1, 'the script wrote into its scratch dir')
  t.match(JSON.parse(await readFile(join(scratch, alerts[0]!), 'utf8')), { model: 'anomaly', rule: 'overheat', class: 'anomaly', sensor: 'temp1' }, 'it got the prediction on stdin')
  t.equal(mail.unique.length, 1, 'the cooldown holds back repeats')

  const predict = await cluster.request('gw', 'POST', '/v1/models/anomaly:predict', { instances: [scaled(temperatures(20)), scaled(temperatures(20, 15))] })
  t.equal(predict.status, 200)
  t.equal(predict.body.predictions.length, 2)
  t.ok(predict.body.predictions[0][0] > 0.9 && predict.body.predictions[1][1] > 0.9, 'normal, then anomaly')
  const columnar = await cluster.request('gw', 'POST', '/v1/models/anomaly:predict', { inputs: [scaled(temperatures(20))] })
  t.equal(columnar.body.outputs.length, 1, 'the columnar form answers with outputs (and predictions)')
  const bad = await cluster.request('gw', 'POST', '/v1/models/anomaly:predict', { instances: [scaled(temperatures(20)).slice(1)] })
  t.equal(bad.status, 400)
  t.match(bad.body, { code: 'ERR_INVALID_INPUT', field: 'instances[0]', message: /expected 16 values, got 15/ })
  const garbage = await fetch(`${gw.api}/v1/models/anomaly:predict`, { method: 'POST', body: '{"instances": [', headers: { 'content-type': 'application/json' } })
  t.equal(garbage.status, 400, 'malformed JSON is a 400')

  const status = await cluster.get('gw', '/v1/status')
  t.match(status.runtime, { backend: 'wasm', backendInUse: true, instances: [{ name: 'anomaly', state: 'running', backend: 'wasm' }] })
  t.match(status.sensors, [{ id: 'temp1', type: 'simulated', unit: '°C', status: 'open' }])
  const node = await cluster.get('gw', `/v1/registry/node/${gw.peerId}`)
  t.match(node.value, { sensors: [{ id: 'temp1', type: 'simulated', unit: '°C' }], backend: 'wasm' }, 'sensors and backend advertised in node/<self>')
  const instance = await cluster.get('gw', `/v1/registry/instance/${gw.peerId}/anomaly`)
  t.match(instance.value, { state: 'running', model: 'anomaly', version: '1.0.0' })
  const metrics = await (await fetch(`${gw.api}/metrics`)).text()
  t.match(metrics, /gatemesh_inference_backend\{runtime="tfjs",backend="wasm"[^}]*\} 1/)
  t.match(metrics, /gatemesh_rule_fired_total\{model="anomaly",rule="overheat"[^}]*\} 1/)

  t.match(await gatemesh('stop', 'anomaly', '--api', gw.api, '--data', gw.dir), /anomaly stopped/)
  t.equal((await cluster.request('gw', 'GET', '/v1/models/anomaly')).status, 404, '404 again after gatemesh stop')
  t.match((await cluster.get('gw', `/v1/registry/instance/${gw.peerId}/anomaly`)).value, { state: 'stopped' })
})

await t.test('receivers down, five notifications, agent restarted, receivers back: each arrives exactly once', async t => {
  const zip = await bundleFile({
    name: 'notify',
    config: {
      rules: [{
        name: 'alert',
        when: 'class == "anomaly"',
        actions: [
          { type: 'email', to: 'ops@example.test', subject: 'alert {{reading}}', text: 'score {{score}}' },
          { type: 'mqtt.publish', topic: 'gatemesh/notify/alerts' },
          { type: 'sms', to: '+15550009999', body: 'alert' }
        ]
      }]
    }
  })
  await gatemesh('run', zip, '--api', gw.api, '--data', gw.dir)
  const base = { mail: mail.unique.length, mqtt: mqttSink.unique.length, sms: http.sms.unique.length }
  await mail.stop()
  await broker.stop()
  await http.stop()

  for (let i = 0; i < 5; i++) {
    const r = await cluster.request('gw', 'POST', '/v1/models/notify:predict', { instances: [scaled(temperatures(20, 12 + i))] })
    t.equal(r.status, 200, `anomaly ${i + 1} predicted ${r.status === 200 ? '' : JSON.stringify(r.body)}`)
  }
  const outbox = await waitFor(async () => {
    const o = await cluster.get('gw', '/v1/outbox')
    return o.pending === 15 && o.jobs.every((j: { attempts: number }) => j.attempts >= 1) ? o : undefined
  }, 'fifteen queued jobs, each tried and failed', 15_000)
  t.equal(outbox.pending, 15, '5 × (email, MQTT, SMS) queued')
  t.ok(outbox.jobs.some((j: { lastError?: string }) => /ECONNREFUSED|unreachable/.test(j.lastError ?? '')), 'failing: nothing listens')

  await cluster.stop('gw')
  await cluster.start('gw')
  t.equal((await cluster.get('gw', '/v1/outbox')).pending, 15, 'all fifteen still queued after the restart')
  await waitFor(async () => (await cluster.request('gw', 'GET', '/v1/models/notify')).status === 200, 'the instance restored', 30_000)

  await mail.resume()
  await broker.resume()
  await http.resume()
  await waitFor(async () => (await cluster.get('gw', '/v1/outbox')).pending === 0, 'the outbox to drain', 30_000)
  await waitFor(() => mqttSink.unique.length - base.mqtt === 5, 'five MQTT messages at the subscriber', 15_000)
  t.equal(mail.unique.length - base.mail, 5, 'five emails, once each after deduplication')
  t.equal(http.sms.unique.length - base.sms, 5, 'five SMS, once each after deduplication')
  t.equal(mqttSink.unique.length - base.mqtt, 5, 'five MQTT messages, once each after deduplication')
  t.equal(new Set(mail.unique.slice(base.mail).map(m => m.key)).size, 5, 'five distinct Message-IDs')
  t.same((await cluster.get('gw', '/v1/outbox')).dead, [], 'no dead letters')
  await gatemesh('stop', 'notify', '--api', gw.api, '--data', gw.dir)
})

await t.test('a script that escapes, spawns or loops is stopped; the agent keeps running', async t => {
  const escapeTarget = join(cluster.root, 'escaped.txt')
  const zip = await bundleFile({
    name: 'evil',
    action: `
      const fs = require('node:fs')
      const what = process.argv[2]
      if (what === 'escape') fs.writeFileSync(${JSON.stringify(escapeTarget)}, 'out')
      if (what === 'spawn') require('node:child_process').execSync('touch ${escapeTarget}')
      if (what === 'loop') for (;;) {}
    `,
    config: {
      rules: [{ name: 'always', when: 'score >= 0', actions: [{ type: 'script', args: ['escape'] }, { type: 'script', args: ['spawn'] }, { type: 'script', args: ['loop'] }] }]
    }
  })
  await gatemesh('run', zip, '--api', gw.api, '--data', gw.dir)
  const r = await cluster.request('gw', 'POST', '/v1/models/evil:predict', { instances: [scaled(temperatures(20))] })
  t.equal(r.status, 200)
  const outbox = await waitFor(async () => {
    const o = await cluster.get('gw', '/v1/outbox')
    const loop = o.jobs.find((j: { action: { args: string[] } }) => j.action.args[0] === 'loop')
    return o.dead.length === 2 && loop?.lastError != null ? { ...o, loop } : undefined
  }, 'two scripts stopped by the sandbox and the looping one killed', 20_000)
  const dead = new Map(outbox.dead.map((d: { action: { args: string[] }, lastError: string, attempts: number }) => [d.action.args[0], d]))
  t.match(dead.get('escape'), { attempts: 1, lastError: /stopped by the sandbox \(FileSystemWrite denied\)/ }, 'a write outside its dir: stopped, not retried')
  t.match(dead.get('spawn'), { attempts: 1, lastError: /stopped by the sandbox \(ChildProcess denied\)/ }, 'spawning a process: stopped, not retried')
  t.match(outbox.loop, { lastError: /ran past 2000 ms and was killed/ }, 'an endless loop: killed at the time limit')
  await t.rejects(stat(escapeTarget), { code: 'ENOENT' }, 'nothing was written outside')
  t.same((await cluster.get('gw', '/healthz')).ok, true, 'the agent still answers')
  t.equal((await cluster.request('gw', 'POST', '/v1/models/evil:predict', { instances: [scaled(temperatures(20))] })).status, 200, 'and still predicts')
  await gatemesh('stop', 'evil', '--api', gw.api, '--data', gw.dir)
})
