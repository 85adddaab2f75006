import { join } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { readRequired, writeSecret } from './files.ts'
import type { PeerId, PrivateKey } from '@libp2p/interface'

export const PEER_KEY_FILE = 'peer.key'

/** Make and persist a node's libp2p Ed25519 identity (mode 0600). */
export async function createPeerKey (dir: string): Promise<{ privateKey: PrivateKey, peerId: PeerId }> {
  const privateKey = await generateKeyPair('Ed25519')
  await writeSecret(join(dir, PEER_KEY_FILE), privateKeyToProtobuf(privateKey))
  return { privateKey, peerId: peerIdFromPrivateKey(privateKey) }
}

export async function loadPeerKey (dir: string): Promise<{ privateKey: PrivateKey, peerId: PeerId }> {
  const bytes = await readRequired(join(dir, PEER_KEY_FILE), 'peer identity')
  const privateKey = privateKeyFromProtobuf(new Uint8Array(bytes))
  return { privateKey, peerId: peerIdFromPrivateKey(privateKey) }
}
