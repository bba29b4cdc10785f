// Logs are events: every record has an `event` field plus structured fields, written as JSON
// lines (default) or text to stdout. Child loggers carry fixed fields (replica, conn).

import winston from 'winston'

export type LogLevel = 'error' | 'warn' | 'info' | 'debug'
export type LogFormat = 'json' | 'text'

export interface Logger {
  error (event: string, fields?: Record<string, unknown>): void
  warn (event: string, fields?: Record<string, unknown>): void
  info (event: string, fields?: Record<string, unknown>): void
  debug (event: string, fields?: Record<string, unknown>): void
  child (fields: Record<string, unknown>): Logger
  setLevel (level: LogLevel): void
}

export interface LoggerOptions {
  level?: LogLevel
  format?: LogFormat
  /** Where records go; defaults to stdout. Tests pass a stream to read events back. */
  stream?: NodeJS.WritableStream
}

const textFormat = winston.format.printf((info) => {
  const { level, message, timestamp, event: _event, ...rest } = info as Record<string, unknown>
  const fields = Object.entries(rest)
    .filter(([k]) => typeof k === 'string')
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ')
  return `${String(timestamp)} ${String(level)} ${String(message)}${fields ? ' ' + fields : ''}`
})

class EventLogger implements Logger {
  constructor (private readonly w: winston.Logger, private readonly root: winston.Logger) {}

  private log (level: LogLevel, event: string, fields?: Record<string, unknown>): void {
    if (!this.w.isLevelEnabled(level)) return
    this.w.log(level, event, { event, ...fields })
  }

  error (event: string, fields?: Record<string, unknown>): void { this.log('error', event, fields) }
  warn (event: string, fields?: Record<string, unknown>): void { this.log('warn', event, fields) }
  info (event: string, fields?: Record<string, unknown>): void { this.log('info', event, fields) }
  debug (event: string, fields?: Record<string, unknown>): void { this.log('debug', event, fields) }

  child (fields: Record<string, unknown>): Logger {
    return new EventLogger(this.w.child(fields), this.root)
  }

  setLevel (level: LogLevel): void {
    this.root.level = level
    for (const t of this.root.transports) t.level = level
  }
}

export function createLogger (opts: LoggerOptions = {}): Logger {
  const format = opts.format === 'text'
    ? winston.format.combine(winston.format.timestamp(), textFormat)
    : winston.format.combine(winston.format.timestamp(), winston.format.json())
  const transport = new winston.transports.Stream({ stream: opts.stream ?? process.stdout })
  const w = winston.createLogger({
    level: opts.level ?? 'info',
    format,
    transports: [transport],
  })
  // JSON records carry `event`; the winston `message` duplicates it, so drop it there.
  if (opts.format !== 'text') {
    w.format = winston.format.combine(
      winston.format.timestamp(),
      winston.format((info) => { delete (info as Record<string, unknown>).message; return info })(),
      winston.format.json(),
    )
  }
  return new EventLogger(w, w)
}

/** A logger that records nothing; for library use without logging. */
export function nullLogger (): Logger {
  const l: Logger = {
    error () {}, warn () {}, info () {}, debug () {},
    child () { return l },
    setLevel () {},
  }
  return l
}
