// Serial delivery: one order across connections. A server reads its client sockets in
// whatever order they become ready, so two copies fed the same per-connection input can still
// apply requests of different connections in different orders. With a framed protocol the
// applier hands the server the log one *turn* at a time: a turn is one DATA entry (that
// connection's input up to its last complete request, and maybe a partial one after it), and
// the next entry goes out only once the server has answered every complete request the
// connection has sent. Every copy then executes the requests of all connections in log order.
//
// A request the server takes without answering (a blocking one, BLPOP) cannot be waited for:
// its answer comes when another connection's turn unblocks it. The turn ends instead once the
// server says (on the control connection) that the client is blocked and that the bytes it
// has read and not executed are exactly those sent after the blocking request. Then it has
// executed everything before it, taken the blocking request, and read the rest: nothing of
// this connection is left to run at a moment that differs between copies. Later requests on
// a connection that is still blocked end their turn the same way.
//
// A connection whose input cannot be framed, or whose replies cannot be counted, falls back
// to raw order: its bytes are written as they come and no turn waits for it.

import { performance } from 'node:perf_hooks'
import type { Protocol, ReplyReader, Request, Session } from '../protocol/types.js'
import { Queue } from '../util/queue.js'
import type { Control } from './control.js'

interface Pending {
  req: Request
  /** The connection's input offset just after the request. */
  end: number
  /** Replies still to come. */
  left: number
}

/** The ordering state of one connection to the server. */
export class ConnOrder {
  readonly session: Session
  readonly reader: ReplyReader
  /** Bytes of client input written to the server. */
  written = 0
  /** Framed requests not answered yet, in order. */
  readonly pending = new Queue<Pending>()
  /** The server's address of this socket, host:port as the server lists it. */
  addr = ''
  ended = false
  /**
   * The front asked to stop reading this connection's output (backpressure). Its turns must
   * still be read to their end, or the order would stop for every connection: it is read
   * while its turn runs and paused in between (see Applier.pause).
   */
  paused = false

  constructor (protocol: Protocol, private readonly reading: (on: boolean) => void) {
    this.session = protocol.session()
    this.reader = this.session.reader()
  }

  /** Read its output now: its turn runs, or the front wants it. */
  read (on: boolean): void {
    this.reading(on || !this.paused)
  }

  /** Its replies can no longer be counted: the server ended it, or its output is unframeable. */
  get lost (): boolean {
    return this.ended || this.reader.error !== null
  }
}

export interface TurnsOptions {
  control: Control | null
  /** A turn ended: the next entry may go. */
  next: () => void
  /** A turn that waited ended, after `ms`. */
  turn: (ms: number) => void
  /** The server refused the control connection's check (once): turns can no longer ask. */
  refused: (reason: string) => void
}

/** Between checks that a blocking request was taken. */
const POLL_MS = 1
/**
 * A turn whose next reply is this late asks the server too: a request may block that the
 * protocol module does not know as blocking (a module's command), and it must not hold the
 * order for ever. Asked again at this period while the turn waits.
 */
const SLOW_TURN_MS = 100
/**
 * A connection the server does not list for this long (it sees another address: a proxy or
 * NAT between ftproxy and the server) cannot be checked: rather than hold the order for
 * ever, turns stop asking (refused), as when the server refuses the check.
 */
const UNLISTED_MS = 1000

export class Turns {
  /** The connection whose turn runs, or null. */
  private current: ConnOrder | null = null
  private started = 0
  /** A control query for the current turn is in flight. */
  private polling = false
  private pollTimer?: NodeJS.Timeout
  /** The server refused the check (no permission): turns with a blocking request just end. */
  private blind = false
  /** When the current turn's connection was first missing from the server's list (0: not). */
  private unlistedSince = 0

  constructor (private readonly protocol: Protocol, private readonly opts: TurnsOptions) {}

  get busy (): boolean {
    return this.current !== null
  }

  /** A connection's ordering state; `reading` starts or stops reading its output. */
  open (reading: (on: boolean) => void): ConnOrder {
    return new ConnOrder(this.protocol, reading)
  }

  /** The front wants c's output paused (or not): it is, except while c's turn runs. */
  pause (c: ConnOrder, paused: boolean): void {
    c.paused = paused
    c.read(c === this.current)
  }

  /** Client bytes about to be written to c's socket: frames them; may start c's turn. */
  // A connection whose input can no longer be framed (session.fallback) takes no new turns;
  // the requests framed before that point still are (their replies are counted), so a
  // pipeline that ends in garbage does not escape the order. Redis closes such a connection,
  // which ends the turn at the latest.
  input (c: ConnOrder, data: Buffer): void {
    if (c.lost || c.session.fallback !== null) {
      c.written += data.length
      return
    }
    let end = c.written
    for (const req of c.session.request(data)) {
      end += req.size
      c.pending.push({ req, end, left: req.replies })
    }
    c.written += data.length
    if (c.lost) c.pending.clear()
    this.skipSilent(c)
    if (c.pending.length === 0) return
    this.current = c
    this.started = performance.now()
    if (c.paused) c.read(true)
    this.check()
  }

  /** Server bytes from c's socket (before they go anywhere else). */
  output (c: ConnOrder, data: Buffer): void {
    if (c.lost || (c.pending.length === 0 && c.session.fallback !== null)) return
    for (const mark of c.reader.push(data)) {
      const head = c.pending.peek()
      if (mark.request === null || head === undefined) continue
      if (--head.left <= 0) c.pending.shift()
    }
    if (c.lost) c.pending.clear()
    this.skipSilent(c)
    if (c === this.current) this.check()
  }

  /** The server ended c: nothing more will be answered on it. */
  ended (c: ConnOrder): void {
    c.ended = true
    c.pending.clear()
    if (c === this.current) this.check()
  }

  close (): void {
    clearTimeout(this.pollTimer)
    this.pollTimer = undefined
    this.current = null
  }

  // Requests that owe no reply are answered as soon as every earlier one is.
  private skipSilent (c: ConnOrder): void {
    for (let p = c.pending.peek(); p && p.left <= 0; p = c.pending.peek()) c.pending.shift()
  }

  // Whether the current turn is over; ends it, or asks the server when a blocking request is
  // all that is left.
  private check (): void {
    const c = this.current
    if (!c) return
    const head = c.pending.peek()
    if (head === undefined || c.lost) return this.finish()
    if (this.polling) return
    if (head.req.blocking) {
      clearTimeout(this.pollTimer)
      this.pollTimer = undefined
      return this.poll(c, head)
    }
    if (this.pollTimer || !this.opts.control || this.blind) return
    this.pollTimer = setTimeout(() => {
      this.pollTimer = undefined
      const next = c.pending.peek()
      if (this.current === c && next) this.poll(c, next)
    }, SLOW_TURN_MS)
  }

  private poll (c: ConnOrder, head: Pending): void {
    const control = this.opts.control
    // No way to ask: nothing better than not waiting.
    if (!control || this.blind) return this.finish()
    this.polling = true
    control.query(control.dialect.clients).then((reply) => {
      this.polling = false
      if (this.current !== c) return
      const refusal = control.dialect.refused(reply)
      if (refusal !== null) return this.goBlind(refusal)
      const state = control.dialect.client(reply, c.addr)
      if (state?.blocked && state.unexecuted === c.written - head.end) return this.finish()
      if (this.unlisted(state === null)) {
        return this.goBlind(`the server does not list ftproxy's connection from ${c.addr}`)
      }
      if (c.pending.peek() !== head) return this.check()
      const wait = head.req.blocking ? POLL_MS : SLOW_TURN_MS
      this.pollTimer = setTimeout(() => {
        this.pollTimer = undefined
        this.check()
      }, wait)
    }, () => {
      // The control connection is gone: the replica fails through it (see Control).
      this.polling = false
    })
  }

  // Whether the current turn's connection has been missing from the server's list too long.
  private unlisted (missing: boolean): boolean {
    if (!missing) this.unlistedSince = 0
    else if (this.unlistedSince === 0) this.unlistedSince = performance.now()
    return missing && performance.now() - this.unlistedSince > UNLISTED_MS
  }

  private goBlind (reason: string): void {
    this.blind = true
    this.opts.refused(reason)
    this.finish()
  }

  private finish (): void {
    clearTimeout(this.pollTimer)
    this.pollTimer = undefined
    this.unlistedSince = 0
    if (this.current?.paused) this.current.read(false)
    this.current = null
    this.opts.turn(performance.now() - this.started)
    this.opts.next()
  }
}
