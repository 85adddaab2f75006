import { createWriteStream } from 'node:fs'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import multipart, { type MultipartFile } from '@fastify/multipart'
import { BadRequestError, coordinatorErrorHandler, UnsupportedMediaTypeError, UploadTooLargeError } from '../errors.ts'
import { FILE_NAME_RE, type UploadedFile } from './model-files.ts'
import type { FastifyError, FastifyInstance, FastifyRequest, onRequestAsyncHookHandler, preValidationAsyncHookHandler } from 'fastify'

declare module 'fastify' {
  interface FastifyRequest {
    /** files of a multipart upload, staged on disk, by marker index */
    uploads?: UploadedFile[]
    /** the request's scratch directory, removed when the response is sent */
    staging?: string
  }
}

export interface UploadInit {
  /** where requests stage their files (same file system as the repository) */
  stagingDir: string
  /** bytes of all files of one request together */
  maxBytes: number
  /** @default 64 */
  maxFiles?: number
  /** bytes of one text field @default 1 MiB */
  maxFieldBytes?: number
}

/** Hooks for each upload route. */
export interface UploadHooks {
  onRequest: onRequestAsyncHookHandler
  preValidation: preValidationAsyncHookHandler
}

/** A file part's value in the body: `upload:<n>`, resolved with `uploadedFile`. */
export const FILE_MARKER_PATTERN = '^upload:[0-9]{1,4}$'

/**
 * Multipart uploads for the routes of this plugin: text fields land in the
 * body, validated by the route's closed schema like any JSON body; each
 * file streams to the request's staging directory and appears in the body
 * as a marker (`upload:0`), so the schema names file fields too and a JSON
 * body can never point at a file of its choosing. The size of all files
 * together is counted as they stream: past `maxBytes` the upload is a 413,
 * and a declared Content-Length past it is refused before reading a byte.
 */
export async function registerUploads (app: FastifyInstance, init: UploadInit): Promise<UploadHooks> {
  const maxFieldBytes = init.maxFieldBytes ?? 1024 * 1024
  await mkdir(init.stagingDir, { recursive: true })
  await app.register(multipart, {
    attachFieldsToBody: 'keyValues',
    // busboy's own per-file cut-off sits past ours, so ours (naming the field) speaks first
    limits: { fileSize: init.maxBytes + 1, files: init.maxFiles ?? 64, fields: 32, parts: (init.maxFiles ?? 64) + 32, fieldSize: maxFieldBytes, fieldNameSize: 64 },
    async onFile (this: FastifyRequest, part: MultipartFile) {
      const request = this
      if (part.filename === '') {
        // an empty file input of an HTML form: no file chosen
        part.file.resume()
        return
      }
      if (!FILE_NAME_RE.test(part.filename)) {
        part.file.resume()
        throw new BadRequestError(`body.${part.fieldname}: file name "${part.filename}" must be letters, digits and ._- (no folders)`, { field: `body.${part.fieldname}` })
      }
      request.staging ??= await mkdtemp(join(init.stagingDir, 'upload-'))
      request.uploads ??= []
      const index = request.uploads.length
      const path = join(request.staging, `part-${index}`)
      let size = 0
      const total = (): number => request.uploads!.reduce((n, f) => n + f.size, 0) + size
      const counter = new Transform({
        transform (chunk: Buffer, _enc, cb) {
          size += chunk.byteLength
          if (total() > init.maxBytes) cb(new UploadTooLargeError(`body.${part.fieldname}: the upload is larger than the limit of ${init.maxBytes} bytes`, { field: `body.${part.fieldname}` }))
          else cb(null, chunk)
        }
      })
      await pipeline(part.file, counter, createWriteStream(path, { flags: 'wx', mode: 0o600 }))
      request.uploads.push({ field: part.fieldname, filename: part.filename, path, size })
      ;(part as unknown as { value: string }).value = `upload:${index}`
    }
  })

  // busboy reports a form cut short or garbled as a bare Error (no code, no status): the
  // client's body is at fault, so it is a 400 naming the body, not a 500
  app.setErrorHandler((err: FastifyError, request, reply) => {
    const bare = err.code == null && err.statusCode == null && err.validation == null
    if (bare && request.isMultipart() && /multipart|part header|part terminated|boundary/i.test(err.message)) {
      coordinatorErrorHandler(new BadRequestError(`body: the multipart form is malformed: ${err.message}`, { field: 'body' }) as unknown as FastifyError, request, reply)
      return
    }
    coordinatorErrorHandler(err, request, reply)
  })

  const cleanup = async (request: FastifyRequest): Promise<void> => {
    if (request.staging != null) await rm(request.staging, { recursive: true, force: true })
  }
  app.addHook('onResponse', cleanup)
  app.addHook('onRequestAbort', cleanup)
  // route hooks, so they run after authentication: strangers get a 401, not a 413
  return {
    async onRequest (request, reply) {
      const length = Number(request.headers['content-length'] ?? 0)
      if (/^multipart\/form-data/i.test(request.headers['content-type'] ?? '') && length > init.maxBytes + maxFieldBytes) {
        // the rest of the body is never read: the client must not reuse this connection
        void reply.header('connection', 'close')
        throw new UploadTooLargeError(`body: ${length} bytes is larger than the upload limit of ${init.maxBytes} bytes`, { field: 'body' })
      }
    },
    async preValidation (request) {
      if (!request.isMultipart()) throw new UnsupportedMediaTypeError('send the upload as multipart/form-data')
    }
  }
}

/** The staged file behind a marker of this request, checking it came in `field`. */
export function uploadedFile (request: FastifyRequest, marker: string, field: string): UploadedFile {
  const file = request.uploads?.[Number(marker.slice('upload:'.length))]
  if (file == null || file.field !== field) throw new BadRequestError(`body.${field}: must be a file`, { field: `body.${field}` })
  return file
}

/** Staged files sent under `field` (one or several). */
export function uploadedFiles (request: FastifyRequest, markers: string | string[] | undefined, field: string): UploadedFile[] {
  if (markers == null) return []
  return [markers].flat().map(m => uploadedFile(request, m, field))
}
