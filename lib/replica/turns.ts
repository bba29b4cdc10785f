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
import type { Lane, LaneSink } from './lane.js'

/** How a connection's ordering state reaches its server connection (the Applier's). */
export interface ConnIO {
  /** Start or stop reading the server's output for it. */
  read (on: boolean): void
  /** Write client bytes to its own server connection. */
  write (data: Buffer): void
  /** Server output for it that came another way (the shared lane). */
  output (data: Buffer): void
  /** Its server output cannot be framed (once): it is ordered raw from here on. */
  unframed (reason: string): void
}

const EMPTY: Buffer = Buffer.alloc(0)

/** What goes to a connection's own server connection: bytes, and the requests they frame. */
interface Rest { bytes: Buffer, reqs: readonly Request[] }

interface Pending {
  req: Request
  /** The connection's input offset just after the request. */
  end: number
  /** Replies still to come. */
  left: number
}

/** The ordering state of one connection to the server. */
export class ConnOrder implements LaneSink {
  readonly session: Session
  /** Its replies on its own server connection; none while its requests go on the lane. */
  reader: ReplyReader | null
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
  /** Its requests go on the shared lane (it has sent nothing but shareable ones). */
  onLane: boolean
  /** On the lane: the start of a request not complete yet, not sent anywhere. */
  unsent: Buffer = EMPTY

  constructor (protocol: Protocol, readonly io: ConnIO, lane: boolean) {
    this.session = protocol.session()
    this.reader = lane ? null : this.session.reader()
    this.onLane = lane
  }

  /** Read its output now: its turn runs, or the front wants it. */
  read (on: boolean): void {
    this.io.read(on || !this.paused)
  }

  /** Replies to its requests from the shared lane. */
  output (data: Buffer): void {
    this.io.output(data)
  }

  /** Its replies can no longer be counted: the server ended it, or its output is unframeable. */
  get lost (): boolean {
    return this.ended || (this.reader !== null && this.reader.error !== null)
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
  /** Resolves once ftproxy's own connections answer again (after a CLIENT KILL). */
  sync: () => Promise<void>
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
  /** The shared lane, when the protocol has shareable requests (set by the Applier). */
  lane: Lane | null = null
  /** Work that waits until the lane has answered everything sent before it. */
  private gated: (() => void) | null = null
  /** A lane request must be answered before the next entry (see toLane). */
  private laneWait = false
  /** Connections left with requests unanswered after their turn (blocked on the server). */
  private readonly blocked = new Set<ConnOrder>()
  /** The current turn may close other connections (Request.closesOthers). */
  private closes = false
  /** After such a turn: ftproxy's own connections are checked before the next entry. */
  private syncing = false

  constructor (private readonly protocol: Protocol, private readonly opts: TurnsOptions) {}

  get busy (): boolean {
    return this.current !== null || this.gated !== null || this.laneWait || this.syncing ||
      this.lane?.full === true
  }

  /** The lane took what it held: go on, unless something else still waits. */
  laneWritable (): void {
    if (!this.busy) this.opts.next()
  }

  /** A connection's ordering state. */
  open (io: ConnIO): ConnOrder {
    return new ConnOrder(this.protocol, io, this.lane !== null)
  }

  /** Run `work` once the lane has answered everything sent so far (at once if it has). */
  gate (work: () => void): void {
    if (this.lane?.busy === true) this.gated = work
    else work()
  }

  /** Everything sent on the lane is answered. */
  laneDrained (): void {
    const work = this.gated
    this.gated = null
    this.laneWait = false
    work?.()
    if (!this.busy) this.opts.next()
  }

  /** c ends (EOF, CLOSE): after its lane requests, with a partial one it holds sent first. */
  end (c: ConnOrder, work: () => void): void {
    this.gate(() => {
      if (c.unsent.length > 0) c.io.write(c.unsent)
      c.unsent = EMPTY
      work()
    })
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
    const framing = !c.lost && c.session.fallback === null
    const reqs = framing ? c.session.request(data) : []
    const rest = c.onLane ? this.toLane(c, data, reqs) : { bytes: data, reqs }
    if (rest !== null) this.gate(() => this.own(c, rest.bytes, rest.reqs))
  }

  // Shareable requests at the head go on the lane; the rest (from the first request that is
  // not, or garbage) is returned, to go to c's own connection: c leaves the lane for good.
  // While some connection is blocked with input behind its blocking request, Redis runs
  // that input when a lane request unblocks it, at a moment that depends on how the lane's
  // bytes were read: the next entry then waits for the lane's answer (laneWait).
  private toLane (c: ConnOrder, data: Buffer, reqs: readonly Request[]): Rest | null {
    const bytes = c.unsent.length > 0 ? Buffer.concat([c.unsent, data]) : data
    let k = 0
    let shared = 0
    for (let r = reqs[0]; r?.shareable === true; r = reqs[++k]) shared += r.size
    if (shared > 0) {
      this.lane?.send(c, bytes.subarray(0, shared), reqs.slice(0, k))
      if (this.blocked.size > 0) this.laneWait = true
    }
    if (k === reqs.length && c.session.fallback === null && !c.lost) {
      c.unsent = bytes.subarray(shared)
      return null
    }
    c.onLane = false
    c.unsent = EMPTY
    const rest = reqs.slice(k)
    // Its own connection's replies from here on: a reader that expects the rest's requests
    // (framed before it existed) and every later one.
    const reader = c.reader = c.session.reader()
    for (const r of rest) if (r.replies > 0) reader.expect?.(r)
    return { bytes: bytes.subarray(shared), reqs: rest }
  }

  private own (c: ConnOrder, data: Buffer, reqs: readonly Request[]): void {
    let end = c.written
    for (const req of reqs) {
      end += req.size
      c.pending.push({ req, end, left: req.replies })
    }
    c.io.write(data)
    c.written += data.length
    this.closes = reqs.some((r) => r.closesOthers === true)
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
    if (c.reader === null) return // on the lane: its replies were framed there
    for (const mark of c.reader.push(data)) {
      const head = c.pending.peek()
      if (mark.request === null || mark.request !== head?.req) continue
      if (--head.left <= 0) c.pending.shift()
    }
    if (c.reader.error !== null) c.io.unframed(c.reader.error)
    if (c.lost) c.pending.clear()
    this.skipSilent(c)
    if (c.pending.length === 0) this.blocked.delete(c)
    if (c === this.current) this.check()
  }

  /** The server ended c: nothing more will be answered on it. */
  ended (c: ConnOrder): void {
    c.ended = true
    c.pending.clear()
    this.blocked.delete(c)
    if (c === this.current) this.check()
  }

  close (): void {
    clearTimeout(this.pollTimer)
    this.pollTimer = undefined
    this.current = null
    this.gated = null
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
    const c = this.current
    if (c?.paused) c.read(false)
    if (c && c.pending.length > 0) this.blocked.add(c)
    this.current = null
    this.opts.turn(performance.now() - this.started)
    if (this.closes) return this.resync()
    this.opts.next()
  }

  // A turn that may have closed ftproxy's own connections (CLIENT KILL TYPE normal): they
  // reopen now, at this point in the order on every copy, not whenever each copy notices.
  private resync (): void {
    this.closes = false
    this.syncing = true
    const go = (): void => {
      this.syncing = false
      if (!this.busy) this.opts.next()
    }
    this.opts.sync().then(go, go)
  }
}
