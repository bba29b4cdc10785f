// One front's session at the agent: the entries it applied, the server's output per
// connection, and how much of that output the front has credited (OUT_ACK). Output is kept
// until credited, so a channel that drops loses nothing: it is sent again on the next one.
// It also answers the front's SYNC: with a serial protocol an entry is acknowledged while
// only held, so only this side can tell when the server has run it.

import type { Applier } from '../replica/applier.js'
import { Queue } from '../util/queue.js'

export interface Output {
  /** The server's output from offset `base` on; the bytes before `start` are credited. */
  chunks: Queue<Buffer>
  base: number
  /** Credited by the front up to here. */
  start: number
  end: number
  eof: { offset: number, reset: boolean } | null
  /** The server's end is being confirmed; a close waits for it. */
  ending: boolean
  closeWaiting: boolean
  closed: boolean
  /** OUT_CLOSE went out on a live channel: the front's next credit of it is its last. */
  closeSent: boolean
  paused: boolean
}

/** How often a SYNC not answerable yet looks at the applier again. */
const SYNC_POLL_MS = 1

export class Session {
  applied = 0
  readonly acked = new Map<number, number>()
  readonly out = new Map<number, Output>()
  /** Sends SYNCED(ran) on the session's channel, if it has one then. */
  synced: (ran: number) => void = () => {}
  /** A SYNC waits for its answer. */
  private asked = false
  private syncTimer?: NodeJS.Timeout
  private closed = false

  constructor (
    readonly frontId: string,
    readonly epoch: number,
    readonly applier: Applier,
    public window: number
  ) {}

  output (conn: number): Output {
    let o = this.out.get(conn)
    if (!o) {
      o = {
        chunks: new Queue(),
        base: 0,
        start: 0,
        end: 0,
        eof: null,
        ending: false,
        closeWaiting: false,
        closed: false,
        closeSent: false,
        paused: false,
      }
      this.out.set(conn, o)
    }
    return o
  }

  /** Keeps `data` (from offset o.end) until the front credits it. */
  append (o: Output, data: Buffer): void {
    o.chunks.push(data)
    o.end += data.length
  }

  /** The front has the output of `conn` up to `offset`: drop it here. */
  credit (conn: number, offset: number): void {
    const o = this.out.get(conn)
    if (!o) return
    for (let c = o.chunks.peek(); c !== undefined; c = o.chunks.peek()) {
      if (o.base + c.length > offset) break
      o.chunks.shift()
      o.base += c.length
    }
    o.start = Math.max(o.start, o.base)
    if (o.chunks.length > 0 && offset > o.start) o.start = offset
    if (o.paused && o.end - o.start <= this.window) {
      o.paused = false
      this.applier.resume(conn)
    }
    if (o.closed && o.closeSent && o.start === o.end) this.forget(conn)
  }

  /**
   * The applier has run everything it was given: nothing connecting or queued, no turn
   * waiting for its replies, no lane request unanswered, every write done. In raw mode that
   * is every byte written to the server's socket: whether the server has run them cannot
   * be told without framing.
   */
  get idle (): boolean {
    return !this.applier.running && this.applier.unacked === 0
  }

  /**
   * A SYNC (of a seq <= applied): synced(applied) once the applier is idle, at once if it
   * is. Until then it looks every SYNC_POLL_MS; one answer covers every SYNC asked before it.
   */
  sync (): void {
    this.asked = true
    if (this.syncTimer === undefined) this.checkSync()
  }

  /** The session ends: its applier's sockets go, and so does any SYNC waiting. */
  close (): void {
    this.closed = true
    clearTimeout(this.syncTimer)
    this.syncTimer = undefined
    this.applier.close()
  }

  private checkSync (): void {
    this.syncTimer = undefined
    if (!this.asked || this.closed) return
    if (!this.idle) {
      this.syncTimer = setTimeout(() => this.checkSync(), SYNC_POLL_MS)
      this.syncTimer.unref()
      return
    }
    this.asked = false
    this.synced(this.applied)
  }

  forget (conn: number): void {
    this.out.delete(conn)
    this.acked.delete(conn)
  }
}

/** The output the front has not credited, as (offset, bytes) pieces in order. */
export function * uncredited (o: Output): Generator<{ offset: number, data: Buffer }> {
  let offset = o.base
  for (const c of o.chunks) {
    const skip = o.start - offset
    yield skip > 0 ? { offset: o.start, data: c.subarray(skip) } : { offset, data: c }
    offset += c.length
  }
}
