import { join } from 'node:path'
import { pino, multistream, type Logger, type StreamEntry } from 'pino'
import { RotatingFile } from './rotating-file.ts'

export type { Logger }

export interface LoggerInit {
  /** Peer id of this node, on every line as `node`. */
  node: string
  level?: string
  /** Write `<dir>/agent.log` (size-bounded) when set. */
  dir?: string
  maxFileBytes?: number
  files?: number
  /** @default true */
  stdout?: boolean
  /** Name of the log file. @default 'agent.log' */
  fileName?: string
  /** More destinations for every line, e.g. the agent's searchable log store. */
  sinks?: Array<{ write(line: string): unknown }>
  /**
   * Writing the log file failed (a full disk, say): called once per
   * failure. Logging never throws; lines are dropped from the file until it
   * takes them again.
   */
  onFileError?: (err: NodeJS.ErrnoException, path: string) => void
}

/**
 * pino JSON lines with `node`, `service`, `level` (as a label) and `msg`.
 * Components take `logger.child({ service: 'registry' })`.
 */
export function createLogger (init: LoggerInit): { logger: Logger, close: () => void } {
  const streams: StreamEntry[] = []
  let file: RotatingFile | undefined
  if (init.stdout !== false) streams.push({ level: 'trace', stream: process.stdout })
  if (init.dir != null) {
    file = new RotatingFile({
      path: join(init.dir, init.fileName ?? 'agent.log'),
      maxBytes: init.maxFileBytes ?? 10 * 1024 * 1024,
      files: init.files ?? 2,
      ...(init.onFileError == null ? {} : { onError: init.onFileError })
    })
    streams.push({ level: 'trace', stream: file })
  }
  for (const sink of init.sinks ?? []) streams.push({ level: 'trace', stream: sink as StreamEntry['stream'] })
  const logger = pino({
    level: init.level ?? 'info',
    base: { node: init.node },
    messageKey: 'msg',
    timestamp: pino.stdTimeFunctions.epochTime,
    formatters: { level: label => ({ level: label }) },
    // keys and tokens must never reach a log line
    redact: { paths: ['privateKey', '*.privateKey', 'password', '*.password', 'token', '*.token', 'networkKey'], censor: '[redacted]' }
  }, multistream(streams))
  return { logger, close: () => file?.close() }
}
