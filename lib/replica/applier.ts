// Applies the input log to one server: one TCP connection to it per client connection.
//
//   apply(OPEN c)  ──▶ connect (one at a time, in seq order: accept order matches the log)
//   apply(DATA c)  ──▶ socket.write ── callback ──▶ 'ack' (entry), in each connection's order
//   apply(EOF c)   ──▶ socket.end (half-close, after every earlier byte)
//   apply(CLOSE c) ──▶ socket.end, then destroy once the server closed or `linger` passed
//   socket data    ──▶ 'output' (conn, bytes)      socket end/error ──▶ 'output_end'
//   connect fails  ──▶ 'failed' (the replica), or 'conn_failed' (conn) when the front itself
//                      is out of descriptors, buffers, memory or local ports
//
// This is the one implementation of "drive a server with the log": the front uses it for a
// direct replica. It never decides roles; it reports and the front decides.
//
// With a framed protocol (serial mode, see turns.ts) entries go out one turn at a time, in the
// same order on every copy, and an entry is acknowledged as soon as it is held here (a
// primary failure cannot lose it), as long as what is held stays within `holdBytes`.

import { EventEmitter } from 'node:events'
import { readSync } from 'node:fs'
import net from 'node:net'
import type { Entry } from '../front/log.js'
import type { HostPort } from '../address.js'
import { FtproxyError } from '../errors.js'
import type { Protocol } from '../protocol/types.js'
import { formatHostPort } from '../address.js'
import type { Prober } from '../health.js'
import { isLocalResourceError } from '../util/fds.js'
import { Queue } from '../util/queue.js'
import { runningTimeout, type RunningTimeout } from '../util/timer.js'
import { Control } from './control.js'
import type { Transport, TransportEvents } from './transport.js'
import { Lane } from './lane.js'
import { Turns, type ConnOrder } from './turns.js'

export interface ApplierOptions {
  address: HostPort
  connectTimeout: number
  linger: number
  /** The framing; a serial one delivers the log in turns. @default raw (no framing) */
  protocol?: Protocol
  /** Serial mode: input held unwritten beyond this is acknowledged only once written. */
  holdBytes?: number
  /**
   * The server process the state vouches for, as its control dialect names it (resp: its
   * run_id): the control connection's first connect must find it too.
   */
  identity?: string | null
}

/** Its events are the Transport's: the front uses an Applier directly for a direct replica. */
export type ApplierEvents = TransportEvents

interface AppConn {
  id: number
  socket: net.Socket
  /** entries handed to this socket and not yet acknowledged, in order */
  pending: Queue<Entry>
  /** of those, the ones whose write completed (acked once every earlier one is) */
  done: Set<Entry>
  connectTimer?: RunningTimeout
  /** Serial mode: the connection's place in the order. */
  order?: ConnOrder
  outputEnded: boolean
  closed: boolean
  lingerTimer?: NodeJS.Timeout
}

const NONE = Buffer.alloc(0)

// A failed write's error as an end: EPIPE means the server's FIN came first (its kernel then
// refused our bytes), a clean end; anything else is a reset.
function resetOnly (err: Error | null | undefined): Error | null {
  return err && (err as NodeJS.ErrnoException).code !== 'EPIPE' ? err : null
}

// read(2) on a non-blocking descriptor; 0 once nothing is left (EAGAIN), or at the end (EOF,
// or ECONNRESET after the last byte).
function readRaw (fd: number, buf: Buffer): number {
  try {
    return readSync(fd, buf, 0, buf.length, null)
  } catch {
    return 0
  }
}

export class Applier extends EventEmitter<ApplierEvents> implements Transport {
  /** The front probes the server itself before it believes an end (see Front.onOutputEnd). */
  readonly endsConfirmed = false
  /** The last seq handed to apply(). */
  sent = 0
  /** Entries handed to apply() and not yet acknowledged. */
  unacked = 0
  private readonly conns = new Map<number, AppConn>()
  /** Entries waiting for a connect in progress, in seq order. */
  private readonly queue = new Queue<Entry>()
  private connecting = false
  private stopped = false
  /** Serial mode: turns, and the control connection they (and health probes) use. */
  private readonly turns: Turns | null = null
  private readonly control: Control | null = null
  /** Serial resp: the connection shared by requests that do not depend on their connection. */
  private lane: Lane | null = null
  readonly prober: Prober | null = null
  /** Serial mode: entries acknowledged while held, and the bytes they hold. */
  private readonly early = new Set<Entry>()
  /** Serial mode: entries whose ack waits for their write (beyond holdBytes), in order. */
  private readonly late = new Set<Entry>()
  private heldBytes = 0

  constructor (private readonly opts: ApplierOptions) {
    super()
    const protocol = opts.protocol
    if (!protocol?.serial) return
    if (protocol.control) {
      this.control = new Control(opts.address, protocol, (err) => this.fail(err), opts.identity)
      this.openControl(this.control)
      const control = this.control
      this.prober = (timeout) => control.probe(timeout)
    }
    this.turns = new Turns(protocol, {
      control: this.control,
      next: () => this.drain(),
      turn: (ms) => this.emit('turn', ms),
      refused: (reason) => this.emit('control_refused', reason),
      sync: async () => {
        await Promise.all([this.control?.sync(), this.lane?.sync()])
      },
    })
    if (this.control) {
      const turns = this.turns
      this.turns.lane = this.lane = new Lane(opts.address, protocol, {
        drained: () => turns.laneDrained(),
        writable: () => turns.laneWritable(),
        failed: (err) => this.fail(err),
      }, opts.holdBytes)
    }
  }

  /** Hand over the next entry. Entries must come in seq order. */
  apply (entry: Entry): void {
    if (this.stopped) return
    this.sent = entry.seq
    this.unacked++
    if (this.turns) this.hold(entry)
    if (this.connecting || this.queue.length > 0 || this.turns?.busy) {
      this.queue.push(entry)
      return
    }
    this.run(entry)
  }

  pause (conn: number): void {
    const c = this.conns.get(conn)
    if (c?.order) this.turns?.pause(c.order, true)
    else c?.socket.pause()
  }

  resume (conn: number): void {
    const c = this.conns.get(conn)
    if (c?.order) this.turns?.pause(c.order, false)
    else if (c && !c.outputEnded) c.socket.resume()
  }

  /** Stop for good: every socket is destroyed at once and no event is emitted after. */
  close (): void {
    this.stopped = true
    this.removeAllListeners()
    this.turns?.close()
    this.control?.close()
    this.lane?.close()
    this.early.clear()
    this.late.clear()
    for (const c of this.conns.values()) {
      clearTimeout(c.lingerTimer)
      c.connectTimer?.clear()
      c.socket.destroy()
    }
    this.conns.clear()
    this.queue.clear()
  }

  get queued (): number {
    return this.queue.length
  }

  /**
   * The server still has work from it: a connect, entries queued, a turn waiting for its
   * replies, requests on the lane unanswered (serial mode). In raw mode written is all it
   * can tell.
   */
  get running (): boolean {
    return this.connecting || this.queue.length > 0 || this.turns?.busy === true ||
      this.lane?.busy === true
  }

  /** Ask the server on the control connection (resp); null without one. */
  ask (request: Buffer): Promise<Buffer> | null {
    return this.control?.query(request) ?? null
  }

  get connections (): number {
    return this.conns.size
  }

  private run (entry: Entry): void {
    if (entry.data && this.early.has(entry)) this.heldBytes -= entry.data.length
    switch (entry.type) {
      case 'OPEN': return this.open(entry)
      case 'DATA': return this.write(entry)
      case 'EOF': return this.end(entry, false)
      case 'CLOSE': return this.end(entry, true)
    }
  }

  // An end goes after the connection's requests on the shared lane are answered.
  private end (entry: Entry, close: boolean): void {
    const order = this.conns.get(entry.conn)?.order
    if (order && this.turns) this.turns.end(order, () => this.finish(entry, close))
    else this.finish(entry, close)
  }

  private drain (): void {
    while (!this.connecting && !this.stopped && !this.turns?.busy) {
      const entry = this.queue.shift()
      if (entry === undefined) return
      this.run(entry)
    }
  }

  // Held here, it survives a primary failure: acknowledge it now, unless the backlog is over
  // its bound (then the ack waits for the write, and the front's caps on unacknowledged input
  // stop reading the clients).
  // Acks leave in log order: once one waits for its write, every later one waits behind it
  // (an early ack for a later entry would move a connection's acknowledged seq backwards).
  private hold (entry: Entry): void {
    const size = entry.data?.length ?? 0
    if (this.late.size > 0 || this.heldBytes + size > (this.opts.holdBytes ?? Infinity)) {
      this.late.add(entry)
      return
    }
    this.heldBytes += size
    this.early.add(entry)
    this.unacked--
    this.emit('ack', entry)
  }

  // The control connection, then the shared lane, open before any client's: they take the
  // same places in every copy's accept order. Entries wait for them.
  private openControl (control: Control): void {
    this.connecting = true
    const timeout = this.opts.connectTimeout
    control.connect(timeout).then(async () => {
      await this.laneAllowed(control)
      await this.lane?.connect(timeout)
      if (this.stopped) return
      this.connecting = false
      this.drain()
    }).catch((err: Error) => this.fail(err))
  }

  // The server's settings may rule the shared lane out (see resp's laneBlocked): then every
  // connection uses its own server connection, in turns.
  private async laneAllowed (control: Control): Promise<void> {
    const { laneSettings, laneBlocked } = control.dialect
    if (!this.lane || !this.turns || !laneSettings || !laneBlocked) return
    const why = laneBlocked(await control.query(laneSettings))
    if (why === null) return
    this.lane = null
    this.turns.lane = null
    this.emit('lane_off', why)
  }

  private fail (err: Error): void {
    if (this.stopped) return
    this.emit('failed', err)
    this.close()
  }

  private open (entry: Entry): void {
    const { host, port } = this.opts.address
    const socket = net.connect({ host, port, allowHalfOpen: true, noDelay: true })
    const c: AppConn = {
      id: entry.conn,
      socket,
      pending: new Queue(),
      done: new Set(),
      outputEnded: false,
      closed: false,
    }
    this.conns.set(entry.conn, c)
    this.connecting = true
    c.connectTimer = runningTimeout(this.opts.connectTimeout, () => {
      const message = `connect to ${host}:${port} timed out`
      socket.destroy(new FtproxyError('ERR_FTPROXY_CONNECT_TIMEOUT', message))
    })
    const onConnectError = (err: Error): void => {
      c.connectTimer?.clear()
      if (this.stopped) return
      if (isLocalResourceError(err) && this.listenerCount('conn_failed') > 0) {
        return this.connFailed(c, entry, err)
      }
      this.fail(err)
    }
    socket.once('error', onConnectError)
    socket.once('connect', () => {
      c.connectTimer?.clear()
      socket.off('error', onConnectError)
      if (this.stopped) {
        socket.destroy()
        return
      }
      if (this.turns) {
        c.order = this.turns.open({
          read: (on) => {
            if (!on) socket.pause()
            else if (!c.outputEnded) socket.resume()
          },
          write: (data) => {
            if (c.closed || socket.destroyed || !socket.writable) return
            socket.write(data, (err) => { if (err) this.readRest(c, err) })
          },
          // Replies from the lane are counted there, not by this connection's turns.
          output: (data) => this.emit('output', c.id, data),
          unframed: (reason) => this.emit('unframed', c.id, reason),
        })
        const local = { host: socket.localAddress ?? '', port: socket.localPort ?? 0 }
        c.order.addr = formatHostPort(local)
      }
      this.wire(c)
      this.connecting = false
      this.confirm(entry)
      this.drain()
    })
  }

  // The front ran out of something of its own: the server is not at fault and serves the other
  // connections. This one is forgotten here, so its later entries are acked unwritten, after
  // its OPEN; those the front applies while it hears of it wait behind the OPEN in the queue.
  private connFailed (c: AppConn, open: Entry, err: Error): void {
    this.conns.delete(c.id)
    this.emit('conn_failed', c.id, err)
    if (this.stopped) return
    this.connecting = false
    this.confirm(open)
    this.drain()
  }

  // The one place an app socket's listeners are set.
  private wire (c: AppConn): void {
    const { socket } = c
    socket.on('data', (data: Buffer) => this.received(c, data))
    socket.on('end', () => this.ended(c))
    socket.on('error', (err) => this.outputEnd(c, err))
    socket.on('close', () => {
      c.closed = true
      clearTimeout(c.lingerTimer)
      // Whatever was still queued on a dead socket will never be written: do not hold the log.
      for (const e of c.pending) c.done.add(e)
      this.settle(c, null)
      this.outputEnd(c, null)
      this.conns.delete(c.id)
      this.emit('closed', c.id)
    })
  }

  private received (c: AppConn, data: Buffer): void {
    if (c.order) this.turns?.output(c.order, data)
    this.emit('output', c.id, data)
  }

  // Node reports a reset that follows the last bytes read as an end too (libuv takes the
  // hang-up for one). The kernel tells them apart: an empty write succeeds after a FIN and
  // fails with ECONNRESET after a reset (EPIPE: a FIN came first, then a reset).
  private ended (c: AppConn): void {
    if (c.outputEnded || !c.socket.writable) return this.outputEnd(c, null)
    c.socket.write(NONE, (err) => this.outputEnd(c, resetOnly(err)))
  }

  private outputEnd (c: AppConn, err: Error | null): void {
    if (c.outputEnded) return
    c.outputEnded = true
    if (c.order) this.turns?.ended(c.order)
    this.emit('output_end', c.id, err)
  }

  private write (entry: Entry): void {
    const c = this.conns.get(entry.conn)
    if (!c) return this.confirm(entry)
    c.pending.push(entry)
    if (c.closed || c.socket.destroyed || !c.socket.writable) return this.settle(c, entry)
    if (c.order && this.turns) {
      // Held by the turns until its turn (or the lane) takes it: acknowledged now.
      this.turns.input(c.order, entry.data as Buffer)
      return this.settle(c, entry)
    }
    // A write that fails (the server reset the connection) is settled too: those bytes can
    // never be written, and a dead socket must not hold up the log.
    c.socket.write(entry.data as Buffer, (err) => {
      if (err) this.readRest(c, err)
      this.settle(c, entry)
    })
  }

  // A write fails once the server has closed the connection, and Node then closes the socket
  // without reading what it holds: what the server sent before it closed (Redis: its
  // `-ERR Protocol error` reply) would be lost. Read it now, while the descriptor is open.
  private readRest (c: AppConn, err: Error): void {
    if (c.outputEnded) return
    while (c.socket.read() !== null); // buffered while paused: emitted through 'data'
    const fd = (c.socket as unknown as { _handle?: { fd?: number } })._handle?.fd
    if (typeof fd === 'number' && fd >= 0) {
      const buf = Buffer.allocUnsafe(64 * 1024)
      for (let n = readRaw(fd, buf); n > 0; n = readRaw(fd, buf)) {
        this.received(c, Buffer.from(buf.subarray(0, n)))
      }
    }
    this.outputEnd(c, resetOnly(err))
  }

  private finish (entry: Entry, close: boolean): void {
    const c = this.conns.get(entry.conn)
    if (!c) return this.confirm(entry)
    c.pending.push(entry)
    if (c.closed || c.socket.destroyed) return this.settle(c, entry)
    if (close && !c.lingerTimer) {
      // The client is gone: give the server `linger` to read everything and close.
      c.lingerTimer = setTimeout(() => c.socket.destroy(), this.opts.linger)
      c.lingerTimer.unref()
      // Read (and let the front drop) what the server still says, so its close is seen.
      if (!c.outputEnded) c.socket.resume()
    }
    if (!c.socket.writable) return this.settle(c, entry)
    c.socket.end(() => {
      this.settle(c, entry)
      if (close && c.outputEnded) c.socket.destroy()
    })
  }

  // Acks leave in the connection's order even when an entry settles early (nothing to write).
  // The usual case, the oldest pending entry settling, takes the fast path.
  private settle (c: AppConn, entry: Entry | null): void {
    if (entry !== null && c.pending.peek() === entry && c.done.size === 0) {
      c.pending.shift()
      this.confirm(entry)
      return
    }
    if (entry) c.done.add(entry)
    for (let e = c.pending.peek(); e !== undefined && c.done.has(e); e = c.pending.peek()) {
      c.pending.shift()
      c.done.delete(e)
      this.confirm(e)
    }
  }

  private confirm (entry: Entry): void {
    if (this.early.delete(entry)) return
    this.late.delete(entry)
    this.unacked--
    this.emit('ack', entry)
  }
}
