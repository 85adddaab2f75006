import t from 'tap'
import { checkHealth } from '../../node/release/health.ts'

const handover = { rollout: 'r1', version: '1.1.0', from: '1.0.0', peers: 2, at: 0, instances: [{ name: 'anomaly-1', deployment: 'anomaly' }, { name: 'manual' }] }
const base = { handover, verifiedPeers: 2, alivePeers: 2, synced: true, instances: new Map([['anomaly-1', 'running'], ['manual', 'running']]), placedHere: () => true }

t.test('healthy: in the mesh, alive to peers, the instances that ran before run again', async t => {
  const h = checkHealth(base)
  t.ok(h.healthy)
  t.match(h.note, /2 verified peers, registry synced; 2 peers alive; 2 instances running again/)
})

t.test('each check can hold the release back, and the note says which', async t => {
  t.match(checkHealth({ ...base, verifiedPeers: 0 }).note, /no verified peer connection/)
  t.match(checkHealth({ ...base, synced: false }).note, /registry not synced yet/)
  t.match(checkHealth({ ...base, alivePeers: 0 }).note, /no peer alive/)
  const h = checkHealth({ ...base, instances: new Map([['anomaly-1', 'failed']]) })
  t.notOk(h.healthy)
  t.match(h.note, /not running: anomaly-1 \(failed\), manual \(absent\)/)
})

t.test('an instance the scheduler placed elsewhere meanwhile is not expected back; a node that was alone is not asked for peers', async t => {
  t.ok(checkHealth({ ...base, instances: new Map([['manual', 'running']]), placedHere: d => d !== 'anomaly' }).healthy)
  t.ok(checkHealth({ ...base, handover: { ...handover, peers: 0, instances: [] }, verifiedPeers: 0, alivePeers: 0, synced: false }).healthy)
})
