// @ts-check
// A small RESP (Redis protocol) client for the benchmarks and drills: commands are encoded and
// pipelined as the caller likes, replies are parsed incrementally from whatever chunks arrive
// (a reply may be split anywhere), and every reply is handed out in order with the time its
// chunk arrived. Plain loopback TCP, no reconnects: a dropped connection is reported, never hidden.

import net from 'node:net'
import { performance } from 'node:perf_hooks'

/** An error reply (`-ERR ...`): a value, not a thrown exception. */
export class RespError extends Error {
  /** @param {string} message */
  constructor (message) {
    super(message)
    this.name = 'RespError'
  }
}

/**
 * A reply; an array reply's elements are replies too (typed unknown: JSDoc has no recursive
 * aliases).
 * @typedef {string | number | null | RespError | unknown[]} RespReply
 */

/** The parser met bytes that are not RESP. */
export class RespProtocolError extends Error {
  /** @param {string} message */
  constructor (message) {
    super(message)
    this.name = 'RespProtocolError'
  }
}

/**
 * One command as RESP (an array of bulk strings).
 * @param {Array<string | number>} args
 * @returns {string}
 */
export function encode (args) {
  let s = `*${args.length}\r\n`
  for (const a of args) {
    const v = String(a)
    s += `$${Buffer.byteLength(v)}\r\n${v}\r\n`
  }
  return s
}

/**
 * Several commands, back to back (one write = one pipeline burst).
 * @param {Array<Array<string | number>>} commands
 * @returns {string}
 */
export function encodeAll (commands) {
  let s = ''
  for (const c of commands) s += encode(c)
  return s
}

/** Marks "not enough bytes yet" inside the parser. */
const INCOMPLETE = Symbol('incomplete')

/** Incremental RESP2 reply parser: feed() chunks, get complete replies back in order. */
export class RespParser {
  constructor () {
    /** @type {Buffer} */
    this.buf = Buffer.alloc(0)
    this.pos = 0
  }

  /**
   * Parse what can be parsed; keeps an incomplete tail for the next chunk.
   * Throws RespProtocolError on bytes that are not RESP.
   * @param {Buffer} chunk
   * @returns {RespReply[]}
   */
  feed (chunk) {
    const held = this.buf.subarray(this.pos)
    this.buf = held.length > 0 ? Buffer.concat([held, chunk]) : chunk
    this.pos = 0
    /** @type {RespReply[]} */
    const out = []
    while (this.pos < this.buf.length) {
      const start = this.pos
      const v = this.value()
      if (v === INCOMPLETE) {
        this.pos = start
        break
      }
      out.push(v)
    }
    return out
  }

  /** Bytes held for an incomplete reply. */
  get pending () { return this.buf.length - this.pos }

  /**
   * The line at pos (without CRLF), advancing past it; INCOMPLETE if no CRLF yet.
   * @returns {string | typeof INCOMPLETE}
   */
  line () {
    const eol = this.buf.indexOf('\r\n', this.pos, 'latin1')
    if (eol < 0) return INCOMPLETE
    const s = this.buf.toString('latin1', this.pos, eol)
    this.pos = eol + 2
    return s
  }

  /**
   * @param {string} s
   * @returns {number}
   */
  int (s) {
    if (!/^-?\d+$/.test(s)) throw new RespProtocolError(`bad integer ${JSON.stringify(s.slice(0, 32))}`)
    return Number(s)
  }

  /** @returns {RespReply | typeof INCOMPLETE} */
  value () {
    const at = this.pos
    const type = this.buf[at]
    this.pos++
    const l = this.line()
    if (l === INCOMPLETE) return INCOMPLETE
    switch (type) {
      case 0x2b: return l // '+'
      case 0x2d: return new RespError(l) // '-'
      case 0x3a: return this.int(l) // ':'
      case 0x24: { // '$'
        const len = this.int(l)
        if (len < 0) return null
        if (this.buf.length < this.pos + len + 2) return INCOMPLETE
        const end = this.pos + len
        if (this.buf[end] !== 0x0d || this.buf[end + 1] !== 0x0a) {
          throw new RespProtocolError('bulk string without CRLF')
        }
        const s = this.buf.toString('utf8', this.pos, this.pos + len)
        this.pos += len + 2
        return s
      }
      case 0x2a: { // '*'
        const n = this.int(l)
        if (n < 0) return null
        /** @type {unknown[]} */
        const arr = []
        for (let i = 0; i < n; i++) {
          if (this.pos >= this.buf.length) return INCOMPLETE
          const v = this.value()
          if (v === INCOMPLETE) return INCOMPLETE
          arr.push(v)
        }
        return arr
      }
      default: {
        const byte = (type ?? 0).toString(16)
        const near = JSON.stringify(this.buf.toString('latin1', at, at + 32))
        throw new RespProtocolError(`unexpected byte 0x${byte} ${near}`)
      }
    }
  }
}

/**
 * @typedef {object} Waiter
 * @property {number} from  index of the first reply wanted
 * @property {number} to    one past the last
 * @property {RespReply[]} replies
 * @property {(r: RespReply[]) => void} resolve
 * @property {(e: Error) => void} reject
 * @property {NodeJS.Timeout} timer
 */

/** One RESP connection. Replies are numbered from 0 in the order commands were sent. */
export class RespClient {
  /** @param {net.Socket} socket */
  constructor (socket) {
    this.socket = socket
    this.parser = new RespParser()
    /** Commands written so far. */
    this.sent = 0
    /** Replies received so far. */
    this.received = 0
    /** The peer ended its side (FIN). */
    this.ended = false
    /** The socket is closed (for whatever reason). */
    this.closed = false
    /** A socket error, or a RespProtocolError. @type {Error | null} */
    this.error = null
    /**
     * Called once per received chunk with the replies it completed (in order), the index of the
     * first of them and the chunk's arrival time (performance.now()).
     * @type {((replies: RespReply[], first: number, at: number) => void) | null}
     */
    this.onReplies = null
    /** @type {Waiter[]} */
    this.waiters = []
    socket.setNoDelay(true)
    socket.on('data', (d) => this.onData(d))
    socket.on('end', () => { this.ended = true })
    socket.on('error', (err) => { this.error ??= err })
    socket.on('close', () => {
      this.closed = true
      this.failWaiters(this.error ?? new Error('connection closed'))
    })
  }

  /**
   * Connect (bounded by timeoutMs).
   * @param {number} port
   * @param {string} [host]
   * @param {number} [timeoutMs]
   * @returns {Promise<RespClient>}
   */
  static connect (port, host = '127.0.0.1', timeoutMs = 5000) {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ port, host, allowHalfOpen: true })
      const timer = setTimeout(() => {
        socket.destroy()
        reject(new Error(`connect to ${host}:${port} timed out after ${timeoutMs}ms`))
      }, timeoutMs)
      socket.once('connect', () => {
        clearTimeout(timer)
        socket.removeListener('error', onError)
        resolve(new RespClient(socket))
      })
      /** @param {Error} err */
      const onError = (err) => {
        clearTimeout(timer)
        reject(err)
      }
      socket.once('error', onError)
    })
  }

  /** @param {Buffer} d */
  onData (d) {
    const at = performance.now()
    /** @type {RespReply[]} */
    let replies
    try {
      replies = this.parser.feed(d)
    } catch (err) {
      this.error ??= /** @type {Error} */ (err)
      this.socket.destroy()
      return
    }
    if (replies.length === 0) return
    const first = this.received
    this.received += replies.length
    if (this.waiters.length) this.feedWaiters(replies, first)
    if (this.onReplies) this.onReplies(replies, first, at)
  }

  /**
   * @param {RespReply[]} replies
   * @param {number} first
   */
  feedWaiters (replies, first) {
    for (const w of [...this.waiters]) {
      for (const [i, reply] of replies.entries()) {
        const idx = first + i
        if (idx >= w.from && idx < w.to) w.replies.push(reply)
      }
      if (w.replies.length === w.to - w.from) {
        clearTimeout(w.timer)
        this.waiters.splice(this.waiters.indexOf(w), 1)
        w.resolve(w.replies)
      }
    }
  }

  /** @param {Error} err */
  failWaiters (err) {
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer)
      w.reject(err)
    }
  }

  /**
   * Write commands (one pipelined burst). Returns socket.write's backpressure verdict.
   * @param {Array<Array<string | number>>} commands
   * @returns {boolean}
   */
  send (commands) {
    this.sent += commands.length
    return this.socket.write(encodeAll(commands))
  }

  /**
   * Write pre-encoded commands (`count` of them).
   * @param {string | Buffer} bytes
   * @param {number} count
   * @returns {boolean}
   */
  sendRaw (bytes, count) {
    this.sent += count
    return this.socket.write(bytes)
  }

  /**
   * Send commands and wait (bounded) for their replies.
   * @param {Array<Array<string | number>>} commands
   * @param {number} [timeoutMs]
   * @returns {Promise<RespReply[]>}
   */
  call (commands, timeoutMs = 10000) {
    if (commands.length === 0) return Promise.resolve([])
    if (this.closed) return Promise.reject(this.error ?? new Error('connection closed'))
    const from = this.sent
    return new Promise((resolve, reject) => {
      /** @type {Waiter} */
      const w = {
        from,
        to: from + commands.length,
        replies: [],
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.splice(this.waiters.indexOf(w), 1)
          reject(new Error(`${commands.length} replies not received within ${timeoutMs}ms`))
        }, timeoutMs),
      }
      this.waiters.push(w)
      this.send(commands)
    })
  }

  /** Half-close (QUIT-less): the server sees EOF after everything sent. */
  end () { this.socket.end() }

  destroy () { this.socket.destroy() }
}
