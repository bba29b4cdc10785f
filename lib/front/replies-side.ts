// One replica's side of the reply aligner (replies.ts): where it is in its replies, and the
// output it holds until the reference settles its current reply. Pure bookkeeping: what is
// emitted, and when, is the aligner's.

import type { ReplyMark, ReplyReader } from '../protocol/types.js'
import { Queue } from '../util/queue.js'
import { slice } from './replies-bytes.js'

/** The bytes kept of a reply of r that differ from the primary's, for the report. */
const DUMP = 16
export const NONE = Buffer.alloc(0)

/*
 * How the replica's current reply becomes canonical:
 *   start   at a reply boundary: its next byte decides
 *   pass    compared: its own bytes
 *   swap    uncompared, the primary's reply complete: emitted; its own dropped up to its mark
 *   open    the primary has not finished this reply: bytes equal so far pass, the rest waits
 *   ref     it is the reference: its raw bytes; its uncompared replies are remembered
 *   mirror  past MONITOR's reply: the reference's raw bytes, forwarded to the others; a
 *           backup's own are dropped (see replies.ts)
 *   raw     unframed (or gone): its raw bytes
 */
type Mode = 'start' | 'pass' | 'swap' | 'open' | 'ref' | 'mirror' | 'raw'

/** A piece of a replica's output: the rest of a reply (mark) or part of one (no mark). */
interface Piece { buf: Buffer, mark: ReplyMark | null }

export class Side {
  mode: Mode
  /** Replies it has completed: the ordinal of its current reply. */
  replies = 0
  /** Uncompared replies among them (its rank among the connection's uncompared replies). */
  uncompared = 0
  // open: the current reply, not settled yet.
  /** Canonical bytes emitted for it (they equal the reference's, or are the reference's). */
  sent = 0
  /** Its own bytes from `sent` on, not emitted. */
  keep: Buffer[] = []
  keepBytes = 0
  /** Its own bytes differ from the reference's at `sent`: not kept, but for `dump`. */
  lost = false
  dump = NONE
  /** Its own mark, once seen: its flag, and the request it answers. */
  mark: ReplyMark | null = null
  /** Pieces of its later replies, waiting until the current one is settled. */
  readonly queue = new Queue<Piece>()
  queueBytes = 0
  /** Its raw output ended; `endDone`: its canonical end was reported (or returned). */
  ended = false
  endDone = false
  // mirror: where its raw output is in its own feed.
  /** Its raw output so far stops inside a reply (or its reader failed: nobody can tell). */
  mid = false
  /** Promoted inside a reply of its own: its output counts from its next boundary on. */
  skip = false

  constructor (readonly reader: ReplyReader | null, public live: boolean, mode: Mode) {
    this.mode = mode
  }

  /** Bytes of its output held, not emitted yet. */
  get held (): number {
    return this.keepBytes + this.queueBytes + this.dump.length
  }

  /** It waits for the reference: its reply is complete and not settled. */
  get blocked (): boolean {
    return this.mode === 'open' && this.mark !== null
  }

  /** Forget its current reply's state (it is settled, or it will never be). */
  clearOpen (): void {
    this.sent = 0
    this.keep = []
    this.keepBytes = 0
    this.lost = false
    this.dump = NONE
    this.mark = null
  }

  enqueue (buf: Buffer, mark: ReplyMark | null): void {
    this.queue.push({ buf, mark })
    this.queueBytes += buf.length
  }

  dequeue (): Piece | undefined {
    const p = this.queue.shift()
    if (p) this.queueBytes -= p.buf.length
    return p
  }

  /** Its queued pieces, taken out. */
  takeQueue (): Piece[] {
    const out = [...this.queue]
    this.queue.clear()
    this.queueBytes = 0
    return out
  }

  /** Part of its open reply: kept, or past a difference, only the start of it for the dump. */
  hold (buf: Buffer): void {
    if (this.lost) {
      const room = DUMP - this.dump.length
      if (room > 0) this.dump = Buffer.concat([this.dump, buf.subarray(0, room)])
    } else {
      this.keep.push(buf)
      this.keepBytes += buf.length
    }
  }

  /** Its first `n` kept bytes were emitted (they equal the reference's). */
  passed (n: number): void {
    this.keep = slice(this.keep, n, this.keepBytes)
    this.keepBytes -= n
    this.sent += n
  }

  /** Its kept bytes differ from the reference's: keep only their start, for the report. */
  lose (): void {
    this.lost = true
    this.dump = Buffer.concat(slice(this.keep, 0, DUMP))
    this.keep = []
    this.keepBytes = 0
  }

  /** Its own bytes of the open reply, taken out: the kept ones, or the dump. */
  takeOwn (): Buffer[] {
    const own = this.lost ? [this.dump] : this.keep
    this.keep = []
    this.keepBytes = 0
    this.dump = NONE
    return own
  }
}
