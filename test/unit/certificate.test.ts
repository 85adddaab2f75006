import { generateKeyPairSync } from 'node:crypto'
import t from 'tap'
import { issueNodeCertificate, verifyNodeCertificate } from '../../node/identity/certificate.ts'
import { authorizeRegistryWrite, issuePublisherCert, signJws, TYP_NODE_CERT, TYP_REGISTRY_WRITE, verifyRegistryWrite, type RegistryWrite } from '../../packaging/trust.ts'

const fleet = generateKeyPairSync('ed25519')
const other = generateKeyPairSync('ed25519')
const peerId = '12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo'

t.test('node certificates', async t => {
  const cert = await issueNodeCertificate(fleet.privateKey, { peerId, role: 'gateway', labels: { zone: 'a' }, fleetId: 'f1' })
  const claims = await verifyNodeCertificate(cert, fleet.publicKey, peerId)
  t.equal(claims.sub, peerId)
  t.equal(claims.role, 'gateway')
  t.same(claims.labels, { zone: 'a' })

  await t.rejects(verifyNodeCertificate(cert, other.publicKey, peerId), { code: 'ERR_BAD_SIGNATURE' }, 'another fleet\'s key')
  await t.rejects(verifyNodeCertificate(cert, fleet.publicKey, '12D3KooWOther'), { code: 'ERR_CLAIM_MISMATCH' }, 'another peer id')
  const old = await issueNodeCertificate(fleet.privateKey, { peerId, role: 'gateway', fleetId: 'f1', now: 1_000_000, validDays: 1 })
  await t.rejects(verifyNodeCertificate(old, fleet.publicKey, peerId), { code: 'ERR_EXPIRED' }, 'expired')

  const [h, p] = cert.split('.')
  const flipped = `${h}.${p}.${'A'.repeat(86)}`
  await t.rejects(verifyNodeCertificate(flipped, fleet.publicKey, peerId), { code: 'ERR_BAD_SIGNATURE' }, 'tampered signature')
  const none = `${Buffer.from(JSON.stringify({ alg: 'none', typ: TYP_NODE_CERT })).toString('base64url')}.${p}.`
  await t.rejects(verifyNodeCertificate(none, fleet.publicKey, peerId), { code: 'ERR_BAD_SIGNATURE' }, 'alg none')
  await t.rejects(verifyNodeCertificate('garbage', fleet.publicKey, peerId), { code: 'ERR_BAD_SIGNATURE' })
})

t.test('publishers may sign registry writes but not node certificates', async t => {
  const pub = generateKeyPairSync('ed25519')
  const publisherCert = await issuePublisherCert(fleet.privateKey, 'ci-pipeline', pub.publicKey)
  const signer = { key: pub.privateKey, publisherCert }

  const w = (key: string, valueJson: string | null, over: Partial<RegistryWrite> = {}): RegistryWrite => ({ key, valueJson, writer: peerId, ts: [Date.now(), 3], ...over })
  const write = w('deployment/x', '{"a":1}')
  const auth = await authorizeRegistryWrite(write, signer)
  const verified = await verifyRegistryWrite(auth, write, fleet.publicKey)
  t.equal(verified.signer, 'ci-pipeline')
  await t.rejects(verifyRegistryWrite(auth, { ...write, key: 'deployment/y' }, fleet.publicKey), { code: 'ERR_CLAIM_MISMATCH' }, 'another key')
  await t.rejects(verifyRegistryWrite(auth, { ...write, valueJson: '{"a":2}' }, fleet.publicKey), { code: 'ERR_CLAIM_MISMATCH' }, 'another value')
  await t.rejects(verifyRegistryWrite(auth, { ...write, writer: '12D3KooWOtherWriterxxxxxxxxxxxxxxxxxxxxxxxxxxxx' }, fleet.publicKey), { code: 'ERR_CLAIM_MISMATCH' }, 'another writer')
  await t.rejects(verifyRegistryWrite(auth, { ...write, ts: [write.ts[0], 4] }, fleet.publicKey), { code: 'ERR_CLAIM_MISMATCH' }, 'another timestamp')
  await t.rejects(verifyRegistryWrite(auth, write, other.publicKey), { code: 'ERR_BAD_SIGNATURE' }, 'another fleet')
  await t.rejects(verifyRegistryWrite(auth, write, fleet.publicKey, { writingAt: Math.floor(Date.now() / 1000) + 3600 }), { code: 'ERR_EXPIRED' }, 'an expired authorisation cannot be used to write')
  t.ok(await verifyRegistryWrite(auth, write, fleet.publicKey), 'but the entry it made stays valid')

  const legacy = await signJws({ k: 'deployment/x', h: null, iat: Math.floor(Date.now() / 1000) }, TYP_REGISTRY_WRITE, { key: fleet.privateKey })
  await t.rejects(verifyRegistryWrite(legacy, w('deployment/x', null), fleet.publicKey), { code: 'ERR_CLAIM_MISMATCH' }, 'an authorisation that binds no writer or timestamp')
  const forever = await signJws({ k: 'deployment/x', h: null, w: peerId, t: write.ts, iat: 0, exp: 2 ** 40 }, TYP_REGISTRY_WRITE, { key: fleet.privateKey })
  await t.rejects(verifyRegistryWrite(forever, w('deployment/x', null), fleet.publicKey), { code: 'ERR_CLAIM_MISMATCH' }, 'an authorisation that never expires')

  const forgedCert = await signJws({ sub: peerId, role: 'gateway', labels: {}, fleet: 'f1', iat: 1, exp: 2 ** 40 }, TYP_NODE_CERT, signer)
  await t.rejects(verifyNodeCertificate(forgedCert, fleet.publicKey, peerId), { code: 'ERR_BAD_SIGNATURE' }, 'a publisher cannot mint node certificates')

  const rogue = generateKeyPairSync('ed25519')
  const selfCert = await issuePublisherCert(rogue.privateKey, 'self-made', rogue.publicKey)
  const rogueAuth = await authorizeRegistryWrite(write, { key: rogue.privateKey, publisherCert: selfCert })
  await t.rejects(verifyRegistryWrite(rogueAuth, write, fleet.publicKey), { code: 'ERR_BAD_SIGNATURE' }, 'an uncertified publisher')
  await t.rejects(verifyRegistryWrite(auth, write, fleet.publicKey, { allowPublishers: false }), { code: 'ERR_BAD_SIGNATURE' }, 'a publisher where only the fleet key may sign')

  const del = w('deployment/x', null)
  t.equal((await verifyRegistryWrite(await authorizeRegistryWrite(del, { key: fleet.privateKey }), del, fleet.publicKey)).signer, 'fleet', 'deletes are authorised with a null value')
})
