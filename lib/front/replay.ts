// A connection reattached at a re-seed's cut starts, on the joining replica, with the
// requests that recreate its session there (Session.carry: SELECT, AUTH, HELLO...). Their
// replies are the joining replica's alone: they are cut off its output here, before the
// output is aligned and compared, so its next reply lines up with every other replica's.

import type { Protocol, ReplyReader } from '../protocol/types.js'

/** RESP's error replies begin so (simple and blob errors). */
const ERROR = 0x2d
const BLOB_ERROR = 0x21

/** A connection's replay skips, by replica index. */
export class ReplaySkips {
  private readonly skips = new Map<number, ReplaySkip>()

  /** `refused(r)`: r refused a request of its replay: its session there is not the client's. */
  constructor (private readonly protocol: Protocol,
    private readonly refused: (r: number) => void) {}

  /** Replica r starts with `replay` (not empty): the replies to it are dropped. */
  add (r: number, replay: Buffer): void {
    this.skips.set(r, new ReplaySkip(this.protocol, replay))
  }

  /** Replica r left: nothing of its output is awaited. */
  drop (r: number): void {
    this.skips.delete(r)
  }

  /** Some replica has not produced all the replies to its replay yet. */
  get pending (): boolean {
    return this.skips.size > 0
  }

  /** What of replica r's output `data` is its own (the replay's replies cut off). */
  take (r: number, data: Buffer): Buffer {
    const skip = this.skips.get(r)
    if (!skip) return data
    const rest = skip.take(data)
    if (skip.refused) {
      skip.refused = false
      this.refused(r)
    }
    if (skip.done) this.skips.delete(r)
    return rest
  }
}

class ReplaySkip {
  private readonly reader: ReplyReader
  /** Replies still to drop. */
  private left: number
  /** At the start of a reply, and the first byte of the current one. */
  private atStart = true
  private first = 0
  /** A reply to the replay was an error: the session is not the same there. */
  refused = false

  constructor (protocol: Protocol, replay: Buffer) {
    const session = protocol.session()
    this.reader = session.reader()
    this.left = session.request(replay).reduce((n, q) => n + q.replies, 0)
  }

  get done (): boolean {
    return this.left === 0
  }

  /** What of `data` comes after the replay's replies (all of it once they are dropped). */
  take (data: Buffer): Buffer {
    if (this.left === 0) return data
    const marks = this.reader.push(data)
    // Output that cannot be framed is passed on as it is: the comparison then decides.
    if (this.reader.error !== null) {
      this.left = 0
      return data
    }
    let from = 0
    for (const m of marks) {
      this.note(data, from)
      this.atStart = true
      from = m.end
      if (m.request === null) continue
      // Every request replayed was accepted where the session comes from.
      if (this.first === ERROR || this.first === BLOB_ERROR) this.refused = true
      if (--this.left === 0) return data.subarray(m.end)
    }
    this.note(data, from)
    return data.subarray(data.length)
  }

  // The first byte of the reply that starts at `from`, if it starts in this chunk.
  private note (data: Buffer, from: number): void {
    if (!this.atStart || from >= data.length) return
    this.first = data[from] ?? 0
    this.atStart = false
  }
}
