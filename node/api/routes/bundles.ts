import { createWriteStream } from 'node:fs'
import { rm } from 'node:fs/promises'
import { Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { Type, type Static } from '@sinclair/typebox'
import { UploadTooLargeError } from '../../bundles/errors.ts'
import type { BundleService } from '../../bundles/service.ts'
import type { FastifyInstance } from 'fastify'
import type { Readable } from 'node:stream'

/** What the bundle routes need from the agent. */
export type BundleApi = Pick<BundleService, 'list' | 'get' | 'publish' | 'pull' | 'waitFor' | 'store'> & {
  /** Largest upload accepted, in bytes. */
  maxUploadBytes: number
}

const DigestParams = Type.Object({ digest: Type.String({ pattern: '^[0-9a-f]{64}$' }) }, { additionalProperties: false })
const PullQuery = Type.Object({ wait: Type.Boolean({ default: false }) }, { additionalProperties: false })

export async function bundleRoutes (app: FastifyInstance, { bundles }: { bundles: BundleApi }): Promise<void> {
  // the zip streams to disk; it is never buffered whole in memory
  app.addContentTypeParser(['application/zip', 'application/octet-stream'], (_request, payload, done) => { done(null, payload) })

  app.post('/v1/bundles', async (request, reply) => {
    const body = request.body as Readable | undefined
    if (body == null || typeof body.pipe !== 'function') {
      return await reply.code(415).send({ error: 'Unsupported Media Type', code: 'ERR_MEDIA_TYPE', message: 'send the bundle zip as application/zip' })
    }
    const tmp = bundles.store.tempPath('upload')
    let size = 0
    const limit = bundles.maxUploadBytes
    const counter = new Transform({
      transform (chunk: Buffer, _enc, cb) {
        size += chunk.byteLength
        if (size > limit) cb(new UploadTooLargeError(`upload exceeds ${limit} bytes`))
        else cb(null, chunk)
      }
    })
    try {
      await pipeline(body, counter, createWriteStream(tmp, { mode: 0o644 }))
    } catch (err) {
      await rm(tmp, { force: true })
      throw err
    }
    const { bundle, verified, created } = await bundles.publish(tmp)
    // a release lists thousands of files: the count says enough here
    const manifest = verified.kind === 'release' ? { ...verified.manifest, files: undefined, fileCount: verified.manifest.files.length } : verified.manifest
    return await reply.code(created ? 201 : 200).send({ ...bundle, signer: verified.signer, manifest })
  })

  app.get('/v1/bundles', async () => {
    const list = bundles.list()
    return { bundles: list, count: list.length }
  })

  app.get<{ Params: Static<typeof DigestParams> }>('/v1/bundles/:digest', { schema: { params: DigestParams } }, async (request) => {
    return bundles.get(request.params.digest)
  })

  app.post<{ Params: Static<typeof DigestParams>, Querystring: Static<typeof PullQuery> }>('/v1/bundles/:digest/pull', { schema: { params: DigestParams, querystring: PullQuery } }, async (request, reply) => {
    const { digest } = request.params
    const view = bundles.pull(digest)
    if (view.state === 'complete') return await reply.code(200).send(view)
    if (request.query.wait) return await reply.code(200).send(await bundles.waitFor(digest))
    return await reply.code(202).send(view)
  })
}
