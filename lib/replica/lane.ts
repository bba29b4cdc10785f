// The shared lane: one connection per replica that carries, pipelined and in log order, the
// requests of every client connection that has only ever sent shareable requests (plain data
// commands whose effect and reply do not depend on the connection: Request.shareable).
//
// Turns keep one order across connections by waiting for each turn's replies, a round trip
// per turn. Requests on one connection need no wait: the server runs them in the order they
// arrive. So the common case (clients that GET, SET, INCR, LPUSH... on a default session)
// goes out on this connection without waiting, and its replies are handed back to the client
// connections they answer, in order. A client connection that sends anything else leaves the
// lane for good; its requests go to its own server connection as turns, and a turn (or an
// end) waits until the lane has answered everything sent before it (Turns.gate).
//
// Like the control connection it is opened before any client's, so every copy's accept order
// (and its connection ids) stays the same.

import type net from 'node:net'
import type { HostPort } from '../address.js'
import { FtproxyError } from '../errors.js'
import type { Protocol, ReplyReader, Request, Session } from '../protocol/types.js'
import { Queue } from '../util/queue.js'
import { dial } from './dial.js'

/** Where the lane's replies go: the client connection a request came from. */
export interface LaneSink {
  output (data: Buffer): void
}

interface Owed {
  sink: LaneSink
  /** Replies still to come for its requests sent in one piece. */
  left: number
  /** A sync(): called once answered. */
  done?: () => void
}

const NOWHERE: LaneSink = { output: () => {} }

export interface LaneHooks {
  /** Everything sent has been answered. */
  drained: () => void
  /** What was written has left for the server: no longer `full`. */
  writable: () => void
  /** The lane cannot carry requests any more (its server is gone). */
  failed: (err: Error) => void
}

export class Lane {
  private socket: net.Socket | null = null
  private session: Session
  private reader: ReplyReader
  private readonly owed = new Queue<Owed>()
  private dead = false
  private corked = false
  /** Requests sent while it reconnects. */
  private readonly unsent: Buffer[] = []

  constructor (
    private readonly address: HostPort,
    private readonly protocol: Protocol,
    private readonly hooks: LaneHooks,
    /** Bytes written and not yet taken by the server beyond which the lane is `full`. */
    private readonly limit = Infinity
  ) {
    this.session = protocol.session()
    this.reader = this.session.reader()
  }

  /** Some request sent is not answered yet. */
  get busy (): boolean {
    return this.owed.length > 0
  }

  /**
   * The server takes its input more slowly than it comes: no more is sent until it has
   * taken it (Turns waits), so what waits in the front stays bounded (limits.max_lag).
   */
  get full (): boolean {
    return (this.socket?.writableLength ?? 0) > this.limit
  }

  async connect (timeout: number): Promise<void> {
    const socket = await dial(this.address, timeout, 'the lane connection')
    if (this.dead) {
      socket.destroy()
      return
    }
    socket.on('data', (data: Buffer) => this.onData(data))
    socket.on('drain', () => this.hooks.writable())
    socket.on('close', () => this.closed(socket, timeout))
    this.socket = socket
    for (const bytes of this.unsent.splice(0)) socket.write(bytes)
  }

  /** Complete requests of one client connection (`requests` frames `bytes` exactly). */
  send (sink: LaneSink, bytes: Buffer, requests: readonly Request[]): void {
    let replies = 0
    for (const r of requests) replies += r.replies
    // The lane's reader expects their replies (framed once already, by their connection).
    const expect = this.reader.expect?.bind(this.reader)
    if (expect) for (const r of requests) { if (r.replies > 0) expect(r) }
    else this.session.request(bytes)
    if (replies > 0) this.owed.push({ sink, left: replies })
    const socket = this.socket
    if (!socket) {
      this.unsent.push(bytes) // reconnecting: written first thing once connected
      return
    }
    // Requests of many connections that arrive in one turn of the event loop go out in one
    // write: corked until the loop has run every socket it read (setImmediate: after them).
    if (!this.corked) {
      this.corked = true
      socket.cork()
      setImmediate(() => {
        this.corked = false
        socket.uncork()
      })
    }
    socket.write(bytes)
  }

  /**
   * Resolves once the lane answers a request sent now (the protocol's probe): after a request
   * that may have closed it (CLIENT KILL), that is once it is open again.
   */
  sync (): Promise<void> {
    const probe = this.protocol.control?.probe
    if (!probe) return Promise.resolve()
    return new Promise((resolve) => {
      this.session.request(probe)
      this.owed.push({ sink: NOWHERE, left: 1, done: resolve })
      if (this.socket) this.socket.write(probe)
      else this.unsent.push(probe)
    })
  }

  close (): void {
    this.dead = true
    this.socket?.destroy()
  }

  // Replies in order, each to the connection it answers: the replies to one send() go out
  // together; a reply cut across chunks goes out in pieces, to the same one.
  private onData (data: Buffer): void {
    let from = 0
    for (const mark of this.reader.push(data)) {
      const head = this.owed.peek()
      if (head === undefined) break
      if (mark.request === null || --head.left > 0) continue
      head.sink.output(data.subarray(from, mark.end))
      from = mark.end
      this.owed.shift()
      head.done?.()
    }
    const head = this.owed.peek()
    if (from < data.length && head !== undefined) head.sink.output(data.subarray(from))
    if (this.reader.error !== null) {
      return this.fail(new FtproxyError('ERR_FTPROXY_CONTROL_PROTOCOL', this.reader.error))
    }
    if (this.owed.length === 0) this.hooks.drained()
  }

  // The server closed it. With nothing owed (CLIENT KILL TYPE normal from a client, which
  // runs only once the lane has answered everything before it, on every copy alike) it is
  // reopened. With requests owed, they may or may not have run on this copy, and the other
  // copies lost nothing: this replica cannot stay in step, it leaves service.
  private closed (socket: net.Socket, timeout: number): void {
    if (this.dead || socket !== this.socket) return
    this.socket = null
    const owed = [...this.owed]
    if (owed.some((o) => o.done === undefined)) {
      return this.fail(new FtproxyError('ERR_FTPROXY_CONTROL_CLOSED',
        `the server closed the shared lane with ${this.owed.length} requests unanswered`))
    }
    this.owed.clear()
    this.session = this.protocol.session()
    this.reader = this.session.reader()
    // Syncs in flight are asked again on the new connection.
    const probe = this.protocol.control?.probe
    for (const o of owed) {
      if (!probe) continue
      this.session.request(probe)
      this.owed.push(o)
      this.unsent.push(probe)
    }
    this.connect(timeout).catch((err: Error) => this.fail(err))
  }

  private fail (err: Error): void {
    if (this.dead) return
    this.dead = true
    this.socket?.destroy()
    this.hooks.failed(err)
  }
}
