// A RESP (Redis protocol) client for the tests: commands are encoded and pipelined as the test
// likes, replies are parsed incrementally from chunks cut anywhere, RESP2 and RESP3 alike
// (maps, sets, doubles, big numbers, verbatim strings, attributes, pushes). Pushes (RESP3 `>`:
// pub/sub messages, invalidations) are kept apart from replies, since they answer no request.
// Bulk strings are read as latin1 (one char per byte), so binary values round-trip exactly.

import net from 'node:net'

/** An error reply (`-ERR ...`, `!n`): a value, not a throw. `code` is its first word. */
export class RespError extends Error {
  readonly code: string
  constructor (message: string) {
    super(message)
    this.name = 'RespError'
    this.code = message.split(' ', 1)[0] ?? ''
  }
}

/** A RESP3 push (`>`): data the server sent on its own. */
export class RespPush {
  constructor (readonly items: RespValue[]) {}

  /** Its kind (`message`, `subscribe`, `invalidate` …). */
  get kind (): string { return String(this.items[0]) }
}

export type RespValue =
  string | number | bigint | boolean | null | RespError | RespPush | RespValue[] | RespMap
type RespMap = Map<RespValue, RespValue>

/** Bytes that are not RESP. */
class RespParseError extends Error {
  readonly code = 'ERR_TEST_RESP_PARSE'
}

export type Arg = string | number | Buffer

/** One command as RESP (an array of bulk strings). */
export function encode (args: readonly Arg[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)]
  for (const a of args) {
    const b = Buffer.isBuffer(a) ? a : Buffer.from(String(a))
    parts.push(Buffer.from(`$${b.length}\r\n`), b, CRLF)
  }
  return Buffer.concat(parts)
}

/** Several commands back to back (one write: one pipelined burst). */
function encodeAll (commands: ReadonlyArray<readonly Arg[]>): Buffer {
  return Buffer.concat(commands.map(encode))
}

const CRLF = Buffer.from('\r\n')
/** "Not enough bytes yet", inside the parser. */
const MORE = Symbol('more')
type Parsed = RespValue | typeof MORE

/** One complete value and its bytes (a view into the parser's buffer). */
interface Parsed1 { value: RespValue, raw: Buffer }

/** Incremental parser: feed chunks, get complete values back in order. */
class RespParser {
  private buf: Buffer = Buffer.alloc(0)
  private pos = 0

  /** Complete values in `chunk` (and what was held before it). Throws on non-RESP bytes. */
  feed (chunk: Buffer): Parsed1[] {
    const held = this.buf.length - this.pos
    this.buf = held > 0 ? Buffer.concat([this.buf.subarray(this.pos), chunk]) : chunk
    this.pos = 0
    const out: Parsed1[] = []
    while (this.pos < this.buf.length) {
      const start = this.pos
      const value = this.value()
      if (value === MORE) {
        this.pos = start
        break
      }
      out.push({ value, raw: this.buf.subarray(start, this.pos) })
    }
    return out
  }

  /** Bytes held for a value not complete yet. */
  get pending (): number { return this.buf.length - this.pos }

  private line (): string | typeof MORE {
    const eol = this.buf.indexOf(CRLF, this.pos)
    if (eol < 0) return MORE
    const s = this.buf.toString('latin1', this.pos, eol)
    this.pos = eol + 2
    return s
  }

  private int (s: string): number {
    if (!/^-?\d+$/.test(s)) throw new RespParseError(`bad length ${JSON.stringify(s)}`)
    return Number(s)
  }

  private value (): Parsed {
    const at = this.pos
    const type = String.fromCharCode(this.buf[at] ?? 0)
    this.pos++
    const l = this.line()
    if (l === MORE) return MORE
    switch (type) {
      case '+': return l
      case '-': return new RespError(l)
      case ':': return this.int(l)
      case '_': return null
      case '#': return l === 't'
      case ',': return l === 'inf' ? Infinity : l === '-inf' ? -Infinity : Number(l)
      case '(': return BigInt(l)
      case '$': case '!': case '=': return this.blob(type, this.int(l))
      case '*': case '~': case '>': return this.aggregate(type, this.int(l))
      case '%': case '|': return this.map(type, this.int(l))
      default: {
        const near = JSON.stringify(this.buf.toString('latin1', at, at + 32))
        throw new RespParseError(`unexpected type byte at ${near}`)
      }
    }
  }

  private blob (type: string, len: number): Parsed {
    if (len < 0) return null
    if (this.buf.length < this.pos + len + 2) return MORE
    const end = this.pos + len
    if (this.buf[end] !== 0x0d || this.buf[end + 1] !== 0x0a) {
      throw new RespParseError('bulk string without CRLF')
    }
    const s = this.buf.toString('latin1', this.pos, end)
    this.pos = end + 2
    if (type === '!') return new RespError(s)
    return type === '=' ? s.slice(4) : s // verbatim: drop the `txt:` format
  }

  private aggregate (type: string, n: number): Parsed {
    if (n < 0) return null
    const items: RespValue[] = []
    for (let i = 0; i < n; i++) {
      const v = this.value()
      if (v === MORE) return MORE
      items.push(v)
    }
    return type === '>' ? new RespPush(items) : items
  }

  // A map, or an attribute: a map about the value that follows it (returned in its place).
  private map (type: string, n: number): Parsed {
    const m: RespMap = new Map()
    for (let i = 0; i < n; i++) {
      const k = this.value()
      if (k === MORE) return MORE
      const v = this.value()
      if (v === MORE) return MORE
      m.set(k, v)
    }
    return type === '|' ? this.value() : m
  }
}

interface Waiter { to: number, resolve: () => void, reject: (err: Error) => void }

export interface RespConnOptions {
  /** Keep each reply's bytes in `raws` (to compare what two servers sent byte for byte). */
  keepRaw?: boolean
}

/**
 * One RESP connection. Replies (pushes apart) are numbered from 0 in arrival order;
 * `replies` holds those not taken by drain() yet, `received` counts them all.
 */
export class RespConn {
  readonly replies: RespValue[] = []
  readonly raws: Buffer[] = []
  readonly pushes: RespPush[] = []
  /** Replies received in all (drained ones included). */
  received = 0
  /** Requests written (as counted by the caller of send). */
  sent = 0
  ended = false
  closed = false
  /** A socket error, or bytes that are not RESP (code ERR_TEST_RESP_PARSE). */
  error: (Error & { code?: string }) | null = null
  /** Called after each chunk that completed replies or pushes. */
  onData: (() => void) | null = null
  private readonly parser = new RespParser()
  private waiters: Waiter[] = []

  constructor (readonly socket: net.Socket, private readonly opts: RespConnOptions = {}) {
    socket.setNoDelay(true)
    socket.on('data', (d: Buffer) => this.data(d))
    socket.on('end', () => { this.ended = true })
    socket.on('error', (err) => { this.error ??= err })
    socket.on('close', () => {
      this.closed = true
      this.wake()
    })
  }

  static open (port: number, opts: RespConnOptions = {}): Promise<RespConn> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
      socket.once('error', reject)
      socket.once('connect', () => {
        socket.removeListener('error', reject)
        resolve(new RespConn(socket, opts))
      })
    })
  }

  /** Write commands in one burst; returns socket.write's verdict. */
  send (commands: ReadonlyArray<readonly Arg[]>): boolean {
    return this.sendRaw(encodeAll(commands), commands.length)
  }

  /** Write bytes holding `count` requests. */
  sendRaw (bytes: Buffer | string, count: number): boolean {
    this.sent += count
    return this.socket.write(bytes)
  }

  /**
   * Send commands and wait (at most ms) for `expect` more replies (default one each); for a
   * connection with no other reply outstanding. Rejects if it closes or breaks first.
   */
  async call (commands: ReadonlyArray<readonly Arg[]>, ms = 10000,
    expect = commands.length): Promise<RespValue[]> {
    const from = this.replies.length
    const to = this.received + expect
    this.send(commands)
    await this.waitReplies(to, ms)
    return this.replies.slice(from, from + expect)
  }

  /** One command, one reply. */
  async command (...args: Arg[]): Promise<RespValue> {
    return (await this.call([args]))[0] ?? null
  }

  /** Resolves once `received` reaches `to`; rejects on close, parse error or after ms. */
  waitReplies (to: number, ms = 10000): Promise<void> {
    if (this.received >= to) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w)
        reject(Object.assign(new Error(`${to - this.received} replies missing after ${ms}ms`),
          { code: 'ETIMEDOUT' }))
      }, ms)
      const w: Waiter = {
        to,
        resolve: () => { clearTimeout(timer); resolve() },
        reject: (err) => { clearTimeout(timer); reject(err) },
      }
      this.waiters.push(w)
      this.wake()
    })
  }

  /** Takes the replies held so far (and their bytes). */
  drain (): RespValue[] {
    this.raws.length = 0
    return this.replies.splice(0)
  }

  end (): void { this.socket.end() }

  close (): void { this.socket.destroy() }

  private data (d: Buffer): void {
    let parsed: Parsed1[]
    try {
      parsed = this.parser.feed(d)
    } catch (err) {
      this.error ??= err as Error
      this.socket.destroy()
      return
    }
    for (const { value, raw } of parsed) {
      if (value instanceof RespPush) {
        this.pushes.push(value)
        continue
      }
      this.replies.push(value)
      if (this.opts.keepRaw) this.raws.push(Buffer.from(raw))
      this.received++
    }
    if (parsed.length > 0) {
      this.wake()
      this.onData?.()
    }
  }

  private wake (): void {
    if (this.waiters.length === 0) return
    const broken = this.closed || this.error !== null
    const keep: Waiter[] = []
    for (const w of this.waiters) {
      if (this.received >= w.to) w.resolve()
      else if (!broken) keep.push(w)
      else w.reject(this.error ?? Object.assign(new Error('connection closed'), { code: 'EPIPE' }))
    }
    this.waiters = keep
  }
}
