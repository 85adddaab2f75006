import { fileURLToPath } from 'node:url'
import fastifyStatic from '@fastify/static'
import type { FastifyInstance } from 'fastify'

export const DASHBOARD_DIR = fileURLToPath(new URL('../dashboard/', import.meta.url))

/**
 * Everything the dashboard loads comes from this server: no CDN, so it
 * works on a LAN without internet, and the CSP says so to the browser.
 */
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

/** The dashboard: plain HTML, CSS and one ES module, served at `/`. */
export async function dashboardRoutes (app: FastifyInstance): Promise<void> {
  await app.register(fastifyStatic, {
    root: DASHBOARD_DIR,
    prefix: '/',
    index: ['index.html'],
    wildcard: false,
    schemaHide: true,
    setHeaders (reply) {
      void reply.headers({ 'content-security-policy': CSP, 'x-content-type-options': 'nosniff', 'referrer-policy': 'no-referrer', 'cache-control': 'no-cache' })
    }
  })
}
