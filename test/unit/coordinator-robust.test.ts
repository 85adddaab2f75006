import { generateKeyPairSync } from 'node:crypto'
import t from 'tap'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { pino } from 'pino'
import { RenewalService } from '../../coordinator/enrollment/renewal.ts'
import { sensorViews } from '../../coordinator/nodes/monitoring.ts'
import { NodesView } from '../../coordinator/nodes/view.ts'
import { issueNodeCertificate, verifyNodeCertificate } from '../../node/identity/certificate.ts'
import { CertificateRenewal } from '../../node/trust/renewal.ts'

t.test('the nodes view survives any node record', async t => {
  let deep: unknown = 1
  for (let i = 0; i < 100_000; i++) deep = [deep]
  const records: Record<string, unknown> = {
    'node/p1': { role: 'gateway', version: '1', sensors: [{ id: 's1', type: 'temperature', geo: deep }, { id: 's2', type: 'door', geo: { lat: 50.1, lon: 8.6, alt: 100 } }, { id: { no: 1 }, type: 'x' }] },
    'node/p2': { sensors: 'not a list', labels: { a: { b: 1 } } }
  }
  const members = [
    { peerId: 'p1', self: false, role: 'gateway' as const, labels: { site: 'north', bad: { deep } } as any, addresses: ['/ip4/1.2.3.4/tcp/1', { x: 1 }] as any, state: 'alive' as const, lastSeenMs: 0, since: 1 },
    { peerId: 'p2', self: false, labels: {}, addresses: [], state: 'alive' as const, lastSeenMs: 0, since: 1 }
  ]
  const view = new NodesView({ registry: { list: () => [], value: (k: string) => records[k] as any, onChange: () => () => {} }, members: () => members, member: id => members.find(m => m.peerId === id) })
  t.doesNotThrow(() => { view.refresh() })
  const p1 = view.get('p1')!
  t.same(p1.sensors, [{ id: 's1', type: 'temperature' }, { id: 's2', type: 'door', geo: { lat: 50.1, lon: 8.6, alt: 100 } }], 'geo kept only as {lat, lon, alt}')
  t.same(p1.labels, { site: 'north' }, 'labels are string pairs only')
  t.same(p1.addresses, ['/ip4/1.2.3.4/tcp/1'])
  t.same(view.get('p2')!.sensors, [])
  t.doesNotThrow(() => JSON.parse(view.json()))
  t.equal(sensorViews(Array.from({ length: 10_000 }, (_, i) => ({ id: `s${i}`, type: 't' }))).length, 256, 'at most 256 sensors shown')
})

t.test('the coordinator renews certificates, but not for a revoked or unknown peer', async t => {
  const fleet = generateKeyPairSync('ed25519')
  const peerKey = await generateKeyPair('Ed25519')
  const peerId = peerIdFromPrivateKey(peerKey).toString()
  const revoked = new Set<string>()
  const service = new RenewalService({
    network: { handle: async () => {}, unhandle: async () => {} },
    fleet: { privateKey: fleet.privateKey, publicKey: fleet.publicKey, fleetId: 'f' },
    isRevoked: id => revoked.has(id),
    logger: pino({ level: 'silent' })
  })
  const now = Math.floor(Date.now() / 1000)
  const current = await issueNodeCertificate(fleet.privateKey, { peerId, role: 'gateway', labels: { site: 'north' }, fleetId: 'f', validDays: 2, now: now - 86400 })
  const renewed = await verifyNodeCertificate(await service.issueFor(peerId, current), fleet.publicKey, peerId)
  t.match(renewed, { sub: peerId, role: 'gateway', labels: { site: 'north' } }, 'same peer, role and labels')
  t.ok(renewed.exp > now + 2 * 86400 - 60, 'a full new lifetime from now')
  await t.rejects(service.issueFor('12D3KooWSomeoneElsexxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx', current), { code: 'ERR_CLAIM_MISMATCH' }, 'a certificate for another peer than the connection')
  const other = generateKeyPairSync('ed25519')
  await t.rejects(service.issueFor(peerId, await issueNodeCertificate(other.privateKey, { peerId, role: 'server', fleetId: 'x' })), { code: 'ERR_BAD_SIGNATURE' }, 'another fleet\'s certificate')
  await t.rejects(service.issueFor(peerId, await issueNodeCertificate(fleet.privateKey, { peerId, role: 'gateway', fleetId: 'f', validDays: 1, now: now - 3 * 86400 })), { code: 'ERR_EXPIRED' }, 'an expired certificate: re-enroll')
  revoked.add(peerId)
  await t.rejects(service.issueFor(peerId, current), { code: 'ERR_FORBIDDEN' }, 'a revoked peer')
})

t.test('an agent renews once the configured share of its certificate\'s lifetime has passed', async t => {
  const fleet = generateKeyPairSync('ed25519')
  const peerKey = await generateKeyPair('Ed25519')
  const peerId = peerIdFromPrivateKey(peerKey)
  const iat = Math.floor(Date.now() / 1000) - 100
  let cert = await issueNodeCertificate(fleet.privateKey, { peerId: peerId.toString(), role: 'gateway', fleetId: 'f', validDays: 1000 / 86400, now: iat })
  const saved: string[] = []
  const trust = {
    get certificate () { return cert },
    setCertificate: async (c: string) => { cert = c; return await verifyNodeCertificate(c, fleet.publicKey, peerId.toString()) },
    claimsFor: () => ({ sub: peerId.toString(), role: 'gateway' as const, labels: {}, fleet: 'f', iat: JSON.parse(Buffer.from(cert.split('.')[1]!, 'base64url').toString()).iat, exp: JSON.parse(Buffer.from(cert.split('.')[1]!, 'base64url').toString()).exp }),
    verifiedPeers: () => []
  }
  const renewal = new CertificateRenewal({ peerId, trust, network: { dialProtocol: async () => { throw new Error('no network') } }, save: async c => { saved.push(c) }, announce: async () => {}, logger: pino({ level: 'silent' }) }, { renewAfterFraction: 0.5 })
  t.equal(await renewal.check(), undefined, 'not due at 10% of its lifetime')
  const due = new CertificateRenewal({ peerId, trust, network: { dialProtocol: async () => { throw new Error('no network') } }, save: async c => { saved.push(c) }, announce: async () => {}, logger: pino({ level: 'silent' }) }, { renewAfterFraction: 0.05 })
  await t.rejects(due.check(), { code: 'ERR_CERT_RENEWAL' }, 'due, but no coordinator is connected')
  due.useIssuer(async current => {
    const claims = await verifyNodeCertificate(current, fleet.publicKey, peerId.toString())
    return await issueNodeCertificate(fleet.privateKey, { peerId: claims.sub, role: claims.role, fleetId: 'f', validDays: 1000 / 86400 })
  })
  const claims = await due.check()
  t.ok(claims != null && claims.iat >= iat + 100, 'renewed through the issuer')
  t.same(saved, [cert], 'the new certificate was saved')
})
