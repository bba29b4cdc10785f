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

import { EventEmitter } from 'node:events'
import net from 'node:net'
import type { Entry } from '../front/log.js'
import type { HostPort } from '../address.js'
import { FtproxyError } from '../errors.js'
import { isLocalResourceError } from '../util/fds.js'
import { Queue } from '../util/queue.js'
import { runningTimeout, type RunningTimeout } from '../util/timer.js'
import type { Transport, TransportEvents } from './transport.js'

export interface ApplierOptions {
  address: HostPort
  connectTimeout: number
  linger: number
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
  outputEnded: boolean
  closed: boolean
  lingerTimer?: NodeJS.Timeout
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

  constructor (private readonly opts: ApplierOptions) {
    super()
  }

  /** Hand over the next entry. Entries must come in seq order. */
  apply (entry: Entry): void {
    if (this.stopped) return
    this.sent = entry.seq
    this.unacked++
    if (this.connecting || this.queue.length > 0) {
      this.queue.push(entry)
      return
    }
    this.run(entry)
  }

  pause (conn: number): void {
    this.conns.get(conn)?.socket.pause()
  }

  resume (conn: number): void {
    const c = this.conns.get(conn)
    if (c && !c.outputEnded) c.socket.resume()
  }

  /** Stop for good: every socket is destroyed at once and no event is emitted after. */
  close (): void {
    this.stopped = true
    this.removeAllListeners()
    for (const c of this.conns.values()) {
      clearTimeout(c.lingerTimer)
      c.connectTimer?.clear()
      c.socket.destroy()
    }
    this.conns.clear()
    this.queue.clear()
  }

  get connections (): number {
    return this.conns.size
  }

  private run (entry: Entry): void {
    switch (entry.type) {
      case 'OPEN': return this.open(entry)
      case 'DATA': return this.write(entry)
      case 'EOF': return this.finish(entry, false)
      case 'CLOSE': return this.finish(entry, true)
    }
  }

  private drain (): void {
    while (!this.connecting && !this.stopped) {
      const entry = this.queue.shift()
      if (entry === undefined) return
      this.run(entry)
    }
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
      this.emit('failed', err)
      this.close()
    }
    socket.once('error', onConnectError)
    socket.once('connect', () => {
      c.connectTimer?.clear()
      socket.off('error', onConnectError)
      if (this.stopped) {
        socket.destroy()
        return
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
    socket.on('data', (data: Buffer) => this.emit('output', c.id, data))
    socket.on('end', () => this.outputEnd(c, null))
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

  private outputEnd (c: AppConn, err: Error | null): void {
    if (c.outputEnded) return
    c.outputEnded = true
    this.emit('output_end', c.id, err)
  }

  private write (entry: Entry): void {
    const c = this.conns.get(entry.conn)
    if (!c) return this.confirm(entry)
    c.pending.push(entry)
    if (c.closed || c.socket.destroyed || !c.socket.writable) return this.settle(c, entry)
    // A write that fails (the server reset the connection) is settled too: those bytes can
    // never be written, and a dead socket must not hold up the log.
    c.socket.write(entry.data as Buffer, () => this.settle(c, entry))
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
    this.unacked--
    this.emit('ack', entry)
  }
}
