// The demo server: a small deterministic line-protocol KV server. It is the embedded default
// backend and "the legacy server" of the integration tests.
//
//   socket ──data──▶ LineSplitter ──line──▶ DemoStore.execute ──reply──▶ socket.write
//                    (codec, no I/O)        (one Map, shared)            false → pause until drain
//
// Protocol: one command per line (\n, optional \r), one reply line per command.
//   SET k v → OK   GET k → v | (nil)   INCR k → n   DEL k → 1 | 0   PING → PONG   QUIT → OK, close
// Bytes are handled as latin1 so keys and values round-trip byte for byte.

import net from 'node:net'
import { formatHostPort, type HostPort } from './address.js'
import { type Logger, nullLogger } from './logger.js'
import { listen } from './util/listen.js'

/** Longest accepted line in bytes (without its terminator). */
export const MAX_LINE = 64 * 1024

/** Returned by LineSplitter.next() when a line exceeds MAX_LINE. */
export const LINE_TOO_LONG = Symbol('LINE_TOO_LONG')

const LF = 0x0a
const CR = 0x0d
const INT64_MAX = (1n << 63n) - 1n
const INT64_MIN = -(1n << 63n)

/**
 * Splits a byte stream into lines. Holds only the chunks pushed since the last complete line,
 * so the caller bounds memory by not pushing while it is not pulling (backpressure).
 */
export class LineSplitter {
  private chunks: Buffer[] = []
  // Bytes of the current line seen so far; none of them is a newline.
  private partial: Buffer[] = []
  private partialLength = 0

  constructor (private readonly maxLine = MAX_LINE) {}

  push (chunk: Buffer): void {
    if (chunk.length > 0) this.chunks.push(chunk)
  }

  /** The next complete line without \n or \r\n; undefined when none is buffered yet. */
  next (): Buffer | undefined | typeof LINE_TOO_LONG {
    for (let chunk = this.chunks[0]; chunk !== undefined; chunk = this.chunks[0]) {
      const i = chunk.indexOf(LF)
      if (i === -1) {
        this.chunks.shift()
        this.partial.push(chunk)
        this.partialLength += chunk.length
        // +1: the line may still end in \r, which is not part of it.
        if (this.partialLength > this.maxLine + 1) return LINE_TOO_LONG
        continue
      }
      const rest = chunk.subarray(i + 1)
      if (rest.length > 0) this.chunks[0] = rest
      else this.chunks.shift()
      const piece = chunk.subarray(0, i)
      const length = this.partialLength + piece.length
      if (length > this.maxLine + 1) return LINE_TOO_LONG
      let line = this.partial.length > 0 ? Buffer.concat([...this.partial, piece], length) : piece
      this.partial = []
      this.partialLength = 0
      if (line.length > 0 && line[line.length - 1] === CR) line = line.subarray(0, line.length - 1)
      if (line.length > this.maxLine) return LINE_TOO_LONG
      return line
    }
    return undefined
  }
}

export interface Reply {
  /** The reply line, terminator included. */
  text: string
  /** Close the connection after this reply. */
  close: boolean
}

// Verb → number of arguments after the verb. SET's value is the rest of the line.
const ARITY: Record<string, number> = { SET: 2, GET: 1, INCR: 1, DEL: 1, PING: 0, QUIT: 0 }

/**
 * The state machine: one Map, shared by every connection. Deterministic: the same lines in the
 * same order give the same replies, except that with `divergeAfter` set every command after
 * the first N (in total) answers differently, so a copy started with it diverges.
 */
export class DemoStore {
  readonly data = new Map<string, string>()
  commands = 0

  constructor (private readonly divergeAfter?: number) {}

  /** Runs one line; null for an empty line, which gets no reply. */
  execute (line: Buffer): Reply | null {
    const text = line.toString('latin1')
    const verbMatch = /^[ \t]*([^ \t]+)[ \t]*/.exec(text)
    if (verbMatch === null) return null
    this.commands++
    const [matched, verb = ''] = verbMatch
    const args = text.slice(matched.length)
    const reply = this.run(verb, args)
    if (this.divergeAfter !== undefined && this.commands > this.divergeAfter) {
      if (reply.incr !== undefined) return { text: `${reply.incr + 1000n}\n`, close: reply.close }
      return { text: `X${reply.text}\n`, close: reply.close }
    }
    return { text: reply.text + '\n', close: reply.close }
  }

  private run (verb: string, rest: string): { text: string, close: boolean, incr?: bigint } {
    const name = verb.toUpperCase()
    const arity = ARITY[name]
    if (arity === undefined) return { text: `ERR unknown command '${verb}'`, close: false }
    const args = parseArgs(rest, arity)
    if (args === undefined) {
      return { text: `ERR wrong number of arguments for '${name.toLowerCase()}'`, close: false }
    }
    // parseArgs checked the count: the verb's arguments are all there.
    const [key = '', value = ''] = args
    switch (name) {
      case 'SET':
        this.data.set(key, value)
        return { text: 'OK', close: false }
      case 'GET':
        return { text: this.data.get(key) ?? '(nil)', close: false }
      case 'DEL':
        return { text: this.data.delete(key) ? '1' : '0', close: false }
      case 'INCR': return this.incr(key)
      case 'PING':
        return { text: 'PONG', close: false }
      default: // QUIT
        return { text: 'OK', close: true }
    }
  }

  private incr (key: string): { text: string, close: boolean, incr?: bigint } {
    const old = this.data.get(key) ?? '0'
    if (!/^-?(0|[1-9][0-9]*)$/.test(old)) return { text: 'ERR value is not an integer', close: false }
    const n = BigInt(old) + 1n
    if (n > INT64_MAX || n < INT64_MIN) {
      return { text: 'ERR increment or decrement would overflow', close: false }
    }
    this.data.set(key, String(n))
    return { text: String(n), close: false, incr: n }
  }
}

// Splits the text after the verb into exactly `arity` arguments; the last argument of SET (arity
// 2) is the rest of the line, spaces included. undefined when the count is wrong.
function parseArgs (rest: string, arity: number): string[] | undefined {
  if (arity === 0) return rest.length === 0 || /^[ \t]*$/.test(rest) ? [] : undefined
  const m = arity === 1
    ? /^([^ \t]+)[ \t]*$/.exec(rest)
    : /^([^ \t]+)[ \t]+([^ \t].*)$/s.exec(rest)
  return m === null ? undefined : m.slice(1, arity + 1)
}

export interface DemoServerOptions {
  /** @default '127.0.0.1' */
  host?: string
  /** @default 0 (any free port) */
  port?: number
  /** Answer differently after this many commands in total (to test divergence detection). */
  divergeAfter?: number
  log?: Logger
}

interface DemoServerStats {
  commands: number
  connections: Array<{ bufferedBytes: number, waitingForDrain: boolean }>
}

export interface DemoServer {
  address: HostPort
  /** Stops listening and destroys open connections. */
  close (): Promise<void>
  /** Commands run so far and, per connection, its unsent output (for tests and debugging). */
  stats (): DemoServerStats
}

interface Connection {
  socket: net.Socket
  splitter: LineSplitter
  /** write() returned false: not reading or running commands until 'drain'. */
  waitingForDrain: boolean
  /** The client half-closed. */
  peerEnded: boolean
  /** We ended our side (QUIT, line too long, or after the client's EOF); input is dropped. */
  done: boolean
}

export async function startDemoServer (opts: DemoServerOptions = {}): Promise<DemoServer> {
  const log = opts.log ?? nullLogger()
  const store = new DemoStore(opts.divergeAfter)
  const conns = new Set<Connection>()
  // allowHalfOpen: a client's EOF must not end our side before its last replies are written.
  // No Nagle: a client (ftproxy in serial mode) waits for each reply before its next request.
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    setConnection(socket, store, conns, log)
  })

  await listen(server, { port: opts.port ?? 0, host: opts.host ?? '127.0.0.1' })
  server.on('error', (err) => { log.error('demo_server_error', { error: err.message }) })
  const a = server.address() as net.AddressInfo
  const address = { host: a.address, port: a.port }
  log.info('demo_server_listening', {
    address: formatHostPort(address),
    diverge_after: opts.divergeAfter,
  })
  let closing: Promise<void> | undefined
  return {
    address,
    close () {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => { resolve() })
        for (const c of conns) c.socket.destroy()
      })
      return closing
    },
    stats () {
      return {
        commands: store.commands,
        connections: [...conns].map((c) => ({
          bufferedBytes: c.socket.writableLength,
          waitingForDrain: c.waitingForDrain,
        })),
      }
    },
  }
}

// The one place that wires a client socket.
function setConnection (
  socket: net.Socket,
  store: DemoStore,
  conns: Set<Connection>,
  log: Logger
): void {
  const conn: Connection = {
    socket,
    splitter: new LineSplitter(),
    waitingForDrain: false,
    peerEnded: false,
    done: false,
  }
  conns.add(conn)

  socket.on('data', function socketOnData (chunk: Buffer) {
    if (conn.done) return
    conn.splitter.push(chunk)
    // A chunk or two can still arrive after pause(); it waits in the splitter.
    if (!conn.waitingForDrain) pump(conn, store)
  })
  socket.on('end', function socketOnEnd () {
    conn.peerEnded = true
    if (!conn.waitingForDrain) pump(conn, store)
  })
  socket.on('drain', function socketOnDrain () {
    if (!conn.waitingForDrain) return
    conn.waitingForDrain = false
    socket.resume()
    pump(conn, store)
  })
  socket.on('error', function socketOnError (err) {
    log.debug('demo_server_connection_error', { error: err.message })
  })
  socket.on('close', function socketOnClose () {
    conns.delete(conn)
  })
}

// Runs buffered complete lines until none is left or the socket's write buffer is full.
function pump (conn: Connection, store: DemoStore): void {
  const { socket } = conn
  while (!conn.done) {
    const line = conn.splitter.next()
    if (line === undefined) break
    if (line === LINE_TOO_LONG) {
      socket.write('ERR line too long\n')
      finish(conn)
      return
    }
    const reply = store.execute(line)
    if (reply === null) continue
    const flushed = socket.write(reply.text, 'latin1')
    if (reply.close) {
      finish(conn)
      return
    }
    if (!flushed) {
      // Stop reading and running commands: a client that never reads must not grow our memory.
      conn.waitingForDrain = true
      socket.pause()
      return
    }
  }
  // Every complete line is answered; a trailing partial line is dropped.
  if (conn.peerEnded && !conn.done) finish(conn)
}

function finish (conn: Connection): void {
  conn.done = true
  conn.waitingForDrain = false
  conn.socket.end()
  // Keep reading (and dropping) input, so the client's EOF arrives and the socket closes,
  // rather than resetting it with unread bytes.
  conn.socket.resume()
}

export interface DemoServerCliOptions extends DemoServerOptions {
  /** Where the one `listening` line goes. @default process.stdout */
  stdout?: NodeJS.WritableStream
  /** Signals that stop the server. @default ['SIGTERM', 'SIGINT'] */
  signals?: NodeJS.Signals[]
}

/**
 * `ftproxy demo-server`: starts the server, prints one JSON line
 * `{"event":"listening","address":"127.0.0.1:PORT"}`, and resolves once a signal closed it.
 * Rejects when the server cannot start (EADDRINUSE …). Never exits the process.
 */
export async function runDemoServerCli (opts: DemoServerCliOptions = {}): Promise<void> {
  const server = await startDemoServer(opts)
  const stdout = opts.stdout ?? process.stdout
  const signals = opts.signals ?? ['SIGTERM', 'SIGINT']
  stdout.write(JSON.stringify({
    event: 'listening',
    address: formatHostPort(server.address),
  }) + '\n')
  await new Promise<void>((resolve) => {
    function onSignal (signal: NodeJS.Signals): void {
      for (const s of signals) process.off(s, onSignal)
      opts.log?.info('demo_server_stopping', { signal })
      server.close().then(resolve, resolve)
    }
    for (const s of signals) process.on(s, onSignal)
  })
}
