// The mirrored part of a connection (see replies.ts): after MONITOR's reply every copy sends
// its own feed, which no reply of another copy corresponds to, so backups are given the
// reference's bytes instead. This holds what forwarding needs: the reference's unfinished
// feed line, and what was forwarded while some replica had not reached the feed yet.

import type { ReplyMark } from '../protocol/types.js'
import { equalsAll } from './replies-bytes.js'

/** MONITOR's reply when it starts the feed (an error, or +QUEUED inside MULTI, does not). */
const FEED_OK = Buffer.from('+OK\r\n')

/** A reply, complete, that may start a feed: MONITOR's, which is compared. */
export function opensFeed (mark: ReplyMark): boolean {
  return mark.compare && mark.request?.name === 'monitor'
}

/** A complete reply that did start a feed: MONITOR's +OK. */
export function startsFeed (mark: ReplyMark, reply: readonly Buffer[]): boolean {
  return opensFeed(mark) && equalsAll(reply, FEED_OK)
}

export class Mirror {
  /** The reference's bytes since its last complete reply or feed line, not forwarded. */
  private tail: Buffer[] = []
  tailBytes = 0
  /** Bytes forwarded, kept for the replicas that have not reached the feed yet. */
  private backlog: Buffer[] = []
  backlogBytes = 0

  /** `at`: replies before the feed; a replica that has completed them is mirrored. */
  constructor (readonly at: number) {}

  /**
   * A piece of the reference's output, `whole` if it ends at a boundary (a reply, a feed
   * line): the bytes now to forward, whole lines only (a new primary can then take over at a
   * line of its own: see ReplyAligner.promote).
   */
  piece (buf: Buffer, whole: boolean): Buffer[] {
    if (!whole) {
      this.tail.push(buf)
      this.tailBytes += buf.length
      return []
    }
    const out = this.tail.length > 0 ? [...this.tail, buf] : [buf]
    this.tail = []
    this.tailBytes = 0
    return out
  }

  /** The unfinished line: forwarded as it is at the reference's end; forgotten at a promotion. */
  takeTail (): Buffer[] {
    const out = this.tail
    this.tail = []
    this.tailBytes = 0
    return out
  }

  /** Forwarded bytes a replica not mirrored yet will need. */
  keep (pieces: readonly Buffer[]): void {
    for (const p of pieces) {
      this.backlog.push(p)
      this.backlogBytes += p.length
    }
  }

  /** What was forwarded so far, for a replica reaching the feed now. */
  get kept (): readonly Buffer[] {
    return this.backlog
  }

  /** Every replica has reached the feed: nothing needs the backlog any more. */
  forget (): void {
    this.backlog = []
    this.backlogBytes = 0
  }
}
