import { DeliveryError, PermanentDeliveryError } from './errors.ts'
import type { EmailAction } from './schema.ts'
import type { Transporter } from 'nodemailer'

export interface SmtpSettings {
  host: string
  port: number
  secure: boolean
  user?: string
  password?: string
  from: string
  allowSelfSigned: boolean
}

/**
 * Email over SMTP with nodemailer (loaded on first use). The job id becomes
 * the Message-ID, so a retry after a lost answer is the same message and a
 * receiver (or a mail store) can drop the duplicate.
 */
export class EmailChannel {
  readonly #settings: SmtpSettings
  #transport?: Transporter

  constructor (settings: SmtpSettings) {
    this.#settings = settings
  }

  async send (id: string, action: EmailAction, signal: AbortSignal): Promise<void> {
    const transport = await this.#get()
    const s = this.#settings
    const send = transport.sendMail({
      from: s.from,
      to: action.to,
      subject: action.subject,
      text: action.text,
      messageId: `<${id}@gatemesh>`,
      headers: { 'X-Gatemesh-Idempotency-Key': id }
    })
    const aborted = new Promise<never>((_resolve, reject) => {
      signal.addEventListener('abort', () => { reject(new DeliveryError('SMTP delivery timed out')) }, { once: true })
    })
    try {
      await Promise.race([send, aborted])
    } catch (err: any) {
      if (err instanceof DeliveryError) throw err
      // SMTP 5xx answers are final (bad recipient, refused); everything else (connection, 4xx) may pass
      if (typeof err.responseCode === 'number' && err.responseCode >= 500) throw new PermanentDeliveryError(`SMTP: ${err.response ?? err.message}`, { cause: err })
      throw new DeliveryError(`SMTP ${s.host}:${s.port}: ${err.code ?? ''} ${err.message}`.trim(), { cause: err })
    }
  }

  close (): void {
    this.#transport?.close()
  }

  async #get (): Promise<Transporter> {
    if (this.#transport != null) return this.#transport
    const nodemailer = await import('nodemailer')
    const s = this.#settings
    this.#transport = nodemailer.createTransport({
      host: s.host,
      port: s.port,
      secure: s.secure,
      ...(s.user == null ? {} : { auth: { user: s.user, pass: s.password ?? '' } }),
      tls: { rejectUnauthorized: !s.allowSelfSigned },
      connectionTimeout: 10_000,
      greetingTimeout: 10_000,
      socketTimeout: 20_000
    })
    return this.#transport
  }
}
