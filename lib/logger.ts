// Logs are events: every record has an `event` field plus structured fields, written as JSON
// lines (default) or text to stdout. Child loggers carry fixed fields (replica, conn).

import winston from 'winston'

type LogLevel = 'error' | 'warn' | 'info' | 'debug'
type LogFormat = 'json' | 'text'

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
  // Object.entries leaves out winston's symbol keys (level, splat, message).
  const fields = Object.entries(rest)
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

// JSON records carry `event`; the winston `message` duplicates it, so it is dropped there.
const dropMessage = winston.format((info) => {
  delete (info as Record<string, unknown>).message
  return info
})

export function createLogger (opts: LoggerOptions = {}): Logger {
  const format = opts.format === 'text'
    ? winston.format.combine(winston.format.timestamp(), textFormat)
    : winston.format.combine(winston.format.timestamp(), dropMessage(), winston.format.json())
  const transport = new winston.transports.Stream({ stream: opts.stream ?? process.stdout })
  const w = winston.createLogger({
    level: opts.level ?? 'info',
    format,
    transports: [transport],
  })
  return new EventLogger(w, w)
}

/** A logger that records nothing; for library use without logging. */
export function nullLogger (): Logger {
  const l: Logger = {
    error () {},
    warn () {},
    info () {},
    debug () {},
    child () { return l },
    setLevel () {},
  }
  return l
}
