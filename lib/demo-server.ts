// The demo server: a small deterministic line-protocol KV server. It is the embedded default
// backend and "the legacy server" of the integration tests.
//
//   socket ──data──▶ LineSplitter ──line──▶ DemoStore.execute ──reply──▶ socket.write
//                    (codec, no I/O)        (one Map, shared)            false → pause until drain
//
// Protocol: one command per line (\n, optional \r), one reply line per command.
//   SET k v → OK   GET k → v | (nil)   INCR k → n   DEL k → 1 | 0   PING → PONG   QUIT → OK, close
// Bytes are handled as latin1 so keys and values round-trip byte for byte.
//
// State transfer (the re-seed recipe, demo-reseed.ts). These commands are outside the state
// machine: not counted in stats().commands, never altered by divergeAfter.
//   ID          → the id drawn when this server started (16 hex digits), the same until it exits
//   DUMP        → n: starts this connection's dump of the whole map as of now (n entries)
//   DUMPNEXT    → the next batch of the dump (base64, no spaces) | END once it is all sent
//   LOADBEGIN   → OK: starts this connection's load, replacing any load under way
//   LOADPART b  → OK: takes the next batch b of a load (a DUMPNEXT reply, as is)
//   LOADCOMMIT  → n: replaces the whole map with the load at once (n entries now)
// A dump is one byte stream of entries `varint(key length) key varint(value length) value`
// (LEB128 lengths, at most MAX_LINE each; keys and values as latin1 bytes, so spaces, newlines
// and any byte are safe). It is cut at any byte into batches of at most BATCH_BYTES, so that
// `LOADPART <base64>` fits in MAX_LINE, and an entry may span two batches. The dump is a
// point-in-time view although other connections keep writing: until its pass over the live
// map ends, each key written keeps its value from the dump's start (copy on write), so no
// whole copy is made. A key may appear twice in a dump, with the same value. Nothing changes
// before LOADCOMMIT; a bad batch, a bad commit, or the connection closing drops the load. An
// error is one `ERR ...` line (a batch never holds a space, so it is never taken for one).

import { randomBytes } from 'node:crypto'
import net from 'node:net'
import { Writable } from 'node:stream'
import { formatHostPort, type HostPort } from './address.js'
import { createLogger, type Logger, nullLogger } from './logger.js'
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
// The state-transfer verbs (see the header) and their number of arguments.
const TRANSFER: Record<string, number> = {
  ID: 0, DUMP: 0, DUMPNEXT: 0, LOADBEGIN: 0, LOADPART: 1, LOADCOMMIT: 0,
}

/** One connection's state-transfer work: its dump and its load under way. */
interface Session {
  dump?: Snapshot
  load?: Loader
}

/**
 * The state machine: one Map, shared by every connection. Deterministic: the same lines in the
 * same order give the same replies, except that with `divergeAfter` set every command after
 * the first N (in total) answers differently, so a copy started with it diverges.
 */
export class DemoStore {
  /** Drawn at start: tells this server's state from a restarted one's (the ID command). */
  readonly id = randomBytes(8).toString('hex')
  commands = 0
  private data = new Map<string, string>()
  // Dumps still on their pass over `data`: each keeps the old value of a key before it changes.
  private readonly snapshots = new Set<Snapshot>()
  private readonly session: Session = {}

  constructor (private readonly divergeAfter?: number, private readonly log = nullLogger()) {}

  /** The number of keys. */
  get size (): number { return this.data.size }

  /**
   * Runs one line; null for an empty line, which gets no reply. `session` holds the caller's
   * dump and load (default: one shared by every call without it).
   */
  execute (line: Buffer, session = this.session): Reply | null {
    const text = line.toString('latin1')
    const verbMatch = /^[ \t]*([^ \t]+)[ \t]*/.exec(text)
    if (verbMatch === null) return null
    const [matched, verb = ''] = verbMatch
    const args = text.slice(matched.length)
    const name = verb.toUpperCase()
    if (Object.hasOwn(TRANSFER, name)) {
      return { text: this.transfer(name, args, session) + '\n', close: false }
    }
    this.commands++
    const reply = this.run(verb, args)
    if (this.divergeAfter !== undefined && this.commands > this.divergeAfter) {
      if (reply.incr !== undefined) return { text: `${reply.incr + 1000n}\n`, close: reply.close }
      return { text: `X${reply.text}\n`, close: reply.close }
    }
    return { text: reply.text + '\n', close: reply.close }
  }

  /** Drops a session's dump and load (its connection closed). */
  release (session: Session): void {
    if (session.dump !== undefined) this.snapshots.delete(session.dump)
    session.dump = undefined
    session.load = undefined
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
        this.write(key, value)
        return { text: 'OK', close: false }
      case 'GET':
        return { text: this.data.get(key) ?? '(nil)', close: false }
      case 'DEL': {
        const had = this.data.has(key)
        if (had) this.write(key, undefined)
        return { text: had ? '1' : '0', close: false }
      }
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
    this.write(key, String(n))
    return { text: String(n), close: false, incr: n }
  }

  // Every change of the map goes through here: dumps under way keep the value it replaces.
  private write (key: string, value: string | undefined): void {
    for (const s of this.snapshots) s.keep(key, this.data.get(key))
    if (value === undefined) this.data.delete(key)
    else this.data.set(key, value)
  }

  private transfer (name: string, rest: string, session: Session): string {
    const args = parseArgs(rest, TRANSFER[name] ?? 0)
    if (args === undefined) {
      // A load that lost a part must never be committed.
      if (name.startsWith('LOAD')) session.load = undefined
      return `ERR wrong number of arguments for '${name.toLowerCase()}'`
    }
    switch (name) {
      case 'ID': return this.id
      case 'DUMP': return this.dump(session)
      case 'DUMPNEXT': return this.dumpNext(session)
      case 'LOADBEGIN':
        session.load = new Loader()
        return 'OK'
      case 'LOADPART': return loadPart(session, args[0] ?? '')
      default: return this.loadCommit(session)
    }
  }

  private dump (session: Session): string {
    this.release(session)
    const snapshot = new Snapshot(this.data)
    session.dump = snapshot
    this.snapshots.add(snapshot)
    this.log.info('demo_server_dump', { entries: snapshot.entries })
    return String(snapshot.entries)
  }

  private dumpNext (session: Session): string {
    const snapshot = session.dump
    if (snapshot === undefined) return 'ERR no dump under way (send DUMP first)'
    const batch = snapshot.next()
    if (!snapshot.live) this.snapshots.delete(snapshot)
    return batch ?? 'END'
  }

  private loadCommit (session: Session): string {
    const load = session.load
    session.load = undefined
    if (load === undefined) return 'ERR no load under way (send LOADBEGIN first)'
    const bad = load.finish()
    if (bad !== undefined) return `ERR bad dump: ${bad}`
    this.data = load.data
    // Their map no longer changes: what they have yet to send stays as it was.
    this.snapshots.clear()
    this.log.info('demo_server_loaded', { entries: this.data.size })
    return String(this.data.size)
  }
}

function loadPart (session: Session, batch: string): string {
  const load = session.load
  if (load === undefined) return 'ERR no load under way (send LOADBEGIN first)'
  const bad = BASE64.test(batch) && batch.length % 4 === 0
    ? load.push(Buffer.from(batch, 'base64'))
    : 'not base64'
  if (bad === undefined) return 'OK'
  session.load = undefined
  return `ERR bad dump: ${bad}`
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

// The dump format (see the header). A batch is at most BATCH_BYTES so that its base64 after
// `LOADPART ` fits in MAX_LINE; an entry is two fields of at most MAX_LINE bytes each.
const BATCH_BYTES = 3 * Math.floor((MAX_LINE - 'LOADPART '.length) / 4)
const MAX_ENTRY = 2 * (3 + MAX_LINE)
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/
const ABSENT = Symbol('absent')

/**
 * A dump: the map as of its creation, read in batches while the map keeps changing. It walks
 * the live map, skipping keys changed since its start; once that pass is over (`live` false)
 * it sends the values those keys had at its start, kept by keep().
 */
class Snapshot {
  readonly entries: number
  live = true
  private readonly walk: Iterator<[string, string]>
  private readonly kept = new Map<string, string | typeof ABSENT>()
  private keptWalk: Iterator<[string, string | typeof ABSENT]> | undefined
  // Encoded entries not sent yet; a batch is its first BATCH_BYTES at most.
  private buf: Buffer | undefined = Buffer.allocUnsafe(BATCH_BYTES + MAX_ENTRY)
  private filled = 0

  constructor (data: Map<string, string>) {
    this.entries = data.size
    this.walk = data.entries()
  }

  /** The live map is about to change `key`, which had `old` (undefined: absent). */
  keep (key: string, old: string | undefined): void {
    if (this.live && !this.kept.has(key)) this.kept.set(key, old ?? ABSENT)
  }

  /** The next batch in base64; undefined once everything is sent. */
  next (): string | undefined {
    const buf = this.buf
    if (buf === undefined) return undefined
    while (this.filled < BATCH_BYTES) {
      const entry = this.nextEntry()
      if (entry === undefined) break
      this.filled = writeField(buf, writeField(buf, this.filled, entry[0]), entry[1])
    }
    if (this.filled === 0) {
      this.buf = undefined
      return undefined
    }
    const n = Math.min(this.filled, BATCH_BYTES)
    const batch = buf.toString('base64', 0, n)
    buf.copyWithin(0, n, this.filled)
    this.filled -= n
    return batch
  }

  private nextEntry (): [string, string] | undefined {
    while (this.live) {
      const r = this.walk.next()
      if (r.done === true) {
        this.live = false
        this.keptWalk = this.kept.entries()
      } else if (!this.kept.has(r.value[0])) {
        return r.value
      }
    }
    const walk = this.keptWalk
    for (let r = walk?.next(); r !== undefined && r.done !== true; r = walk?.next()) {
      const [key, value] = r.value
      if (value !== ABSENT) return [key, value]
    }
    return undefined
  }
}

// Writes a field (LEB128 length, then latin1 bytes) at `at`; returns where it ends.
function writeField (buf: Buffer, at: number, s: string): number {
  let i = at
  let n = s.length
  while (n >= 0x80) {
    buf[i++] = (n & 0x7f) | 0x80
    n >>>= 7
  }
  buf[i++] = n
  return i + buf.write(s, i, 'latin1')
}

/** A load under way: the entries of the batches taken so far, in a map of its own. */
class Loader {
  readonly data = new Map<string, string>()
  // The start of an entry that the next batch finishes.
  private pending = Buffer.alloc(0)

  /** Takes one batch; a string says why it is malformed. */
  push (batch: Buffer): string | undefined {
    const buf = this.pending.length === 0 ? batch : Buffer.concat([this.pending, batch])
    let at = 0
    for (;;) {
      const key = readField(buf, at)
      if (key === null) break
      if (typeof key === 'string') return key
      const value = readField(buf, key.end)
      if (value === null) break
      if (typeof value === 'string') return value
      this.data.set(key.text, value.text)
      at = value.end
    }
    this.pending = Buffer.from(buf.subarray(at)) // a copy: the batch itself is not kept
    return undefined
  }

  /** undefined when the batches ended on an entry's end, else why not. */
  finish (): string | undefined {
    if (this.pending.length === 0) return undefined
    return `it ends inside an entry (${this.pending.length} bytes)`
  }
}

// The field at `at`: its text and where it ends; null when buf ends inside it; a string says
// why it is malformed.
function readField (buf: Buffer, at: number): { text: string, end: number } | null | string {
  let n = 0
  // A length up to MAX_LINE takes 3 bytes at most.
  for (let i = 0; i < 3; i++) {
    const b = buf[at + i]
    if (b === undefined) return null
    n |= (b & 0x7f) << (7 * i)
    if (b < 0x80) {
      if (n > MAX_LINE) return `a key or value of ${n} bytes (at most ${MAX_LINE})`
      const start = at + i + 1
      if (start + n > buf.length) return null
      return { text: buf.toString('latin1', start, start + n), end: start + n }
    }
  }
  return 'a length longer than 3 bytes'
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
  /** Keys in the map. */
  entries: number
  connections: Array<{ bufferedBytes: number, waitingForDrain: boolean }>
}

export interface DemoServer {
  address: HostPort
  /** The id the ID command answers: drawn at start. */
  id: string
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
  /** Its dump and load under way. */
  session: Session
}

export async function startDemoServer (opts: DemoServerOptions = {}): Promise<DemoServer> {
  const log = opts.log ?? nullLogger()
  const store = new DemoStore(opts.divergeAfter, log)
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
    id: store.id,
  })
  let closing: Promise<void> | undefined
  return {
    address,
    id: store.id,
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
        entries: store.size,
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
    session: {},
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
    store.release(conn.session)
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
    const reply = store.execute(line, conn.session)
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
  /** Where the `listening` line and, without `log`, the events go. @default process.stdout */
  stdout?: NodeJS.WritableStream
  /** Signals that stop the server. @default ['SIGTERM', 'SIGINT'] */
  signals?: NodeJS.Signals[]
}

/**
 * `ftproxy demo-server`: starts the server, prints one JSON line
 * `{"event":"listening","address":"127.0.0.1:PORT","id":"..."}`, and resolves once a signal
 * closed it. Without `log`, events (demo_server_loaded …) go to `stdout` as JSON lines.
 * Output never stops the server: once `stdout` fails (EPIPE: the reader is gone, as when a
 * supervising front died) or holds LOSSY_BACKLOG unsent bytes, lines are dropped.
 * Rejects when the server cannot start (EADDRINUSE …). Never exits the process.
 */
export async function runDemoServerCli (opts: DemoServerCliOptions = {}): Promise<void> {
  const out = lossy(opts.stdout ?? process.stdout)
  const log = opts.log ?? createLogger({ stream: out })
  const server = await startDemoServer({ ...opts, log })
  const signals = opts.signals ?? ['SIGTERM', 'SIGINT']
  out.write(JSON.stringify({
    event: 'listening',
    address: formatHostPort(server.address),
    id: server.id,
  }) + '\n')
  await new Promise<void>((resolve) => {
    function onSignal (signal: NodeJS.Signals): void {
      for (const s of signals) process.off(s, onSignal)
      log.info('demo_server_stopping', { signal })
      server.close().then(resolve, resolve)
    }
    for (const s of signals) process.on(s, onSignal)
  })
}

/** Unsent bytes past which output is dropped rather than buffered. */
const LOSSY_BACKLOG = 1024 * 1024

// A stream onto `out` that never fails and never grows without bound: a write is dropped once
// `out` has failed or is LOSSY_BACKLOG behind. The error listener stays: an EPIPE can still
// come after the server stopped, and it must not throw then either.
function lossy (out: NodeJS.WritableStream): Writable {
  let failed = false
  out.on('error', () => { failed = true })
  return new Writable({
    write (chunk: Buffer, _encoding, done) {
      const backlog = (out as Partial<Writable>).writableLength ?? 0
      if (!failed && backlog < LOSSY_BACKLOG) out.write(chunk)
      done()
    },
  })
}
