// The output stream of one client connection, as every replica produces it.
//
//            base          written      committed        end
//   ref:      |==============|============|================|     primary's bytes (chunks)
//   backup b: ------------------->produced(b)                   compared against ref
//   backup c: --------------------------------------------------->|~~ahead~~|  waits for ref
//
// The reference is the primary's output. A backup's bytes below `end` are compared with it
// at once; bytes beyond `end` wait in its `ahead` list until the primary catches up. Bytes
// are released to the client (`written`) only up to `committed`, which the front moves by
// the output-commit rule. The reference is kept from `base`: the lowest offset that the
// client or some live backup still needs. Pure bookkeeping: no sockets, no timers.

import { Queue } from '../util/queue.js'

export interface Mismatch {
  /** Replica whose bytes differ from the reference (the primary itself after a promotion). */
  replica: number
  offset: number
  expected: Buffer
  actual: Buffer
}

interface Chunk {
  off: number
  buf: Buffer
  /** ack mode: the last input seq handed to the primary when these bytes were read. */
  dep: number
  /** When the primary produced them (for the commit-wait metric). */
  at: number
}

/** What one replica has produced on this connection. */
interface Side {
  live: boolean
  produced: number
  /** Bytes produced beyond the reference's end, waiting for the primary to catch up. */
  ahead: Buffer[]
  aheadBytes: number
  // Stall detection: it owes bytes up to oweTarget since oweSince (-1: owes none).
  oweTarget: number
  oweSince: number
  /** The front paused reading its output: its stall clock stops. */
  suspended: boolean
  /** Its output ended: it owes nothing more. */
  finished: boolean
  /** It ended with a reset, which may have cut its output short anywhere (see finish()). */
  short: boolean
}

const DUMP = 16

/** A replica's side, from `produced` on: owing nothing, holding nothing. */
function newSide (live: boolean, produced: number): Side {
  return {
    live,
    produced,
    ahead: [],
    aheadBytes: 0,
    oweTarget: -1,
    oweSince: 0,
    suspended: false,
    finished: false,
    short: false,
  }
}

export class OutputStream {
  private readonly chunks = new Queue<Chunk>()
  end = 0
  written = 0
  committed = 0
  primary: number
  private readonly sides: Side[]

  constructor (live: boolean[], primary: number) {
    this.primary = primary
    this.sides = live.map((l) => newSide(l, 0))
  }

  /** Whether replica r still takes part in this connection. */
  isLive (r: number): boolean {
    return this.side(r).live
  }

  /** Bytes replica r has produced on this connection. */
  producedBy (r: number): number {
    return this.side(r).produced
  }

  /** Bytes replica r produced beyond the reference, not yet compared. */
  aheadOf (r: number): number {
    return this.side(r).aheadBytes
  }

  /** Lowest offset still held. */
  get base (): number {
    return this.chunks.peek()?.off ?? this.end
  }

  /**
   * Bytes of reference held (unreleased or not yet confirmed by every live backup). After a
   * promotion, released bytes kept only so that the new primary's replay can be verified do
   * not count: they are bounded (nothing is appended until the replay is done) and pausing
   * the primary for them would stop the very replay that frees them.
   */
  get held (): number {
    if (!this.replaying()) return this.end - this.base
    const c = this.chunks.at(this.find(this.keepFrom()))
    return this.end - Math.max(this.base, c?.off ?? this.end)
  }

  /**
   * Bytes produced by replica r. Returns the mismatches found: r's own (its bytes differ
   * from the reference), or, when r is the primary, those of backups whose ahead bytes
   * differ from what the primary has now produced.
   */
  push (r: number, buf: Buffer, dep: number, now: number): Mismatch[] {
    const side = this.side(r)
    let data = buf
    const off = side.produced
    if (off < this.end) {
      const n = Math.min(data.length, this.end - off)
      const bad = this.compare(off, data.subarray(0, n))
      if (bad >= 0) {
        const actual = data.subarray(bad - off, bad - off + DUMP)
        return [{ replica: r, offset: bad, expected: this.slice(bad, DUMP), actual }]
      }
      side.produced = off + n
      data = data.subarray(n)
    }
    const found: Mismatch[] = []
    if (data.length > 0) {
      if (r === this.primary) {
        this.chunks.push({ off: this.end, buf: data, dep, at: now })
        this.end += data.length
        side.produced = this.end
        this.sides.forEach((o, i) => {
          if (i !== r && o.live && o.aheadBytes > 0) found.push(...this.refeed(i, now))
        })
      } else {
        side.ahead.push(data)
        side.aheadBytes += data.length
        side.produced += data.length
      }
    }
    this.noteProgress(now)
    return found
  }

  /** Move committed forward over chunks whose inputs every backup has acknowledged. */
  commitAcked (seq: number): void {
    let i = this.find(this.committed)
    for (let c = this.chunks.at(i); c !== undefined && c.dep <= seq; c = this.chunks.at(++i)) {
      this.committed = c.off + c.buf.length
    }
  }

  /** When the oldest uncommitted byte was produced (undefined: everything is committed). */
  get uncommittedSince (): number | undefined {
    return this.committed < this.end ? this.chunks.at(this.find(this.committed))?.at : undefined
  }

  /** Move committed forward to `offset` (capped at end). */
  commitTo (offset: number): void {
    const to = Math.min(offset, this.end)
    if (to > this.committed) this.committed = to
  }

  /**
   * The lowest offset every live backup has produced and matched (end if none). A backup
   * whose output a reset cut short holds nothing back: it will never match more.
   */
  matchedByBackups (): number {
    let m = this.end
    this.sides.forEach((s, r) => {
      if (r !== this.primary && s.live && !s.short) m = Math.min(m, s.produced)
    })
    return m
  }

  /** Take the committed bytes not yet released, marking them released. */
  take (): Buffer[] {
    const out: Buffer[] = []
    let i = this.find(this.written)
    for (let c = this.chunks.at(i); this.written < this.committed && c; c = this.chunks.at(++i)) {
      const from = this.written - c.off
      const to = Math.min(c.buf.length, this.committed - c.off)
      out.push(from === 0 && to === c.buf.length ? c.buf : c.buf.subarray(from, to))
      this.written = c.off + to
    }
    this.trim()
    return out
  }

  /**
   * Drop chunks that the client has and every live backup has confirmed, and that a newly
   * promoted primary has reproduced (its pushes are compared against them).
   */
  trim (): void {
    let keepFrom = this.keepFrom()
    if (this.replaying()) keepFrom = Math.min(keepFrom, this.side(this.primary).produced)
    let c = this.chunks.peek()
    while (c && c.off + c.buf.length <= keepFrom) {
      this.chunks.shift()
      c = this.chunks.peek()
    }
  }

  /**
   * Replica r is gone (down, stale, diverged): it no longer holds anything back, and every
   * comparison that involves it goes with it. Others' debts are counted afresh from `now`:
   * a debt towards bytes only r produced would otherwise never be paid, and the replica
   * owing it would be judged stalled.
   */
  drop (r: number, now: number): void {
    const side = this.side(r)
    side.live = false
    side.ahead = []
    side.aheadBytes = 0
    this.clearDebts(now)
    this.trim()
  }

  /**
   * Replica r joins at the reference's end (a re-seed's cut: every replica has produced
   * exactly the reference then); its bytes are compared from there on.
   */
  join (r: number): void {
    this.side(r) // it must exist
    this.sides[r] = newSide(true, this.end)
  }

  /**
   * Make backup `to` the primary. The old primary's bytes are kept as far as the client has
   * them or a live replica confirmed them; the new primary must reproduce those exactly
   * (its next pushes are compared), and everything after comes from it.
   */
  promote (to: number, dep: number, now: number): Mismatch[] {
    this.drop(this.primary, now)
    let keep = this.written
    for (const s of this.sides) if (s.live) keep = Math.max(keep, Math.min(s.produced, this.end))
    this.truncate(Math.min(keep, this.end))
    this.primary = to
    const side = this.side(to)
    const found: Mismatch[] = []
    if (side.aheadBytes > 0) {
      // Its ahead bytes start at `end` (it produced past the old reference): they become
      // the reference, and other backups' ahead bytes are compared with them.
      const pieces = side.ahead
      side.produced -= side.aheadBytes
      side.ahead = []
      side.aheadBytes = 0
      for (const p of pieces) found.push(...this.push(to, p, dep, now))
    }
    this.clearDebts(now)
    return found
  }

  /**
   * Planned switchover: backup `to` has produced exactly the reference (nothing less, nothing
   * ahead), so it simply becomes the primary and the old primary stays a live backup.
   */
  swap (to: number, now: number): boolean {
    const side = this.side(to)
    if (!side.live || side.produced !== this.end || side.aheadBytes !== 0) return false
    this.primary = to
    this.clearDebts(now)
    return true
  }

  /**
   * Whether every live replica has produced exactly the reference (or, cut short by a
   * reset, a part of it).
   */
  get inSync (): boolean {
    return this.sides.every((s) => !s.live ||
      (s.aheadBytes === 0 && (s.produced === this.end || s.short)))
  }

  /**
   * r's output ended: it owes nothing more. `short`: the end was a reset, which discards
   * whatever the server had not sent yet, so two copies may stop at different offsets: its
   * bytes were compared as far as they go, and it holds back nothing after them.
   */
  finish (r: number, short: boolean, now: number): void {
    const side = this.side(r)
    side.finished = true
    side.short = short
    side.oweTarget = -1
    this.noteProgress(now)
  }

  /** Drop what backup r produced beyond the reference: the primary's output was cut short. */
  cutAhead (r: number): void {
    const side = this.side(r)
    side.produced -= side.aheadBytes
    side.ahead = []
    side.aheadBytes = 0
  }

  /** Stop (suspend) or restart the stall clock of r: the front paused its reads. */
  suspend (r: number, on: boolean, now: number): void {
    const side = this.side(r)
    side.suspended = on
    side.oweTarget = -1
    if (!on) this.noteProgress(now)
  }

  /** The front was not running for `ms`: that time counts against no debt. */
  discount (ms: number): void {
    for (const s of this.sides) if (s.oweTarget >= 0) s.oweSince += ms
  }

  /** Replicas that have owed output others produced for longer than `stallMs`. */
  stalled (now: number, stallMs: number): number[] {
    const out: number[] = []
    this.sides.forEach((s, r) => {
      if (s.live && s.oweTarget >= 0 && !s.suspended && now - s.oweSince > stallMs) out.push(r)
    })
    return out
  }

  private side (r: number): Side {
    const s = this.sides[r]
    if (!s) throw new RangeError(`no replica ${r} on this output stream`)
    return s
  }

  private clearDebts (now: number): void {
    for (const s of this.sides) s.oweTarget = -1
    this.noteProgress(now)
  }

  // A replica that fell behind the furthest producer owes those bytes from now on; the debt
  // is paid when it reaches that offset (then a new one starts if it is still behind), so
  // a replica that keeps up with a steady lag is never taken for stalled.
  private noteProgress (now: number): void {
    let max = this.end
    for (const s of this.sides) if (s.live) max = Math.max(max, s.produced)
    for (const s of this.sides) {
      if (!s.live || s.suspended || s.finished) continue
      if (s.oweTarget >= 0 && s.produced >= s.oweTarget) s.oweTarget = -1
      if (s.oweTarget < 0 && s.produced < max) {
        s.oweTarget = max
        s.oweSince = now
      }
    }
  }

  // What the client and every live backup have: the reference below it is no longer needed
  // on their behalf.
  private keepFrom (): number {
    return Math.min(this.written, this.matchedByBackups())
  }

  // A promoted primary that has not yet reproduced the whole reference (see promote()).
  private replaying (): boolean {
    const p = this.side(this.primary)
    return p.live && p.produced < this.end
  }

  // Compare r's backed-up ahead bytes with the reference that now covers them.
  private refeed (r: number, now: number): Mismatch[] {
    const side = this.side(r)
    const pieces = side.ahead
    side.produced -= side.aheadBytes
    side.ahead = []
    side.aheadBytes = 0
    for (const [i, piece] of pieces.entries()) {
      if (side.produced >= this.end) {
        for (const p of pieces.slice(i)) {
          side.ahead.push(p)
          side.aheadBytes += p.length
          side.produced += p.length
        }
        break
      }
      const m = this.push(r, piece, 0, now)
      if (m.length > 0) return m
    }
    return []
  }

  private truncate (to: number): void {
    for (let c = this.chunks.last(); c; c = this.chunks.last()) {
      if (c.off >= to) { this.chunks.pop(); continue }
      if (c.off + c.buf.length > to) c.buf = c.buf.subarray(0, to - c.off)
      break
    }
    this.end = to
    if (this.committed > to) this.committed = to
    for (const s of this.sides) if (s.produced > to && s.aheadBytes === 0) s.produced = to
  }

  // Index (in the chunk queue) of the chunk holding `offset` (length if past the end).
  private find (offset: number): number {
    let lo = 0
    let hi = this.chunks.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      const c = this.chunks.at(mid) as Chunk
      if (c.off + c.buf.length <= offset) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  // First offset where `data` (placed at `off`) differs from the reference, or -1.
  private compare (off: number, data: Buffer): number {
    let i = this.find(off)
    let pos = 0
    while (pos < data.length) {
      const c = this.chunks.at(i++)
      if (!c) return off + pos // cannot happen: callers compare below `end` only
      const from = off + pos - c.off
      const n = Math.min(c.buf.length - from, data.length - pos)
      const a = c.buf.subarray(from, from + n)
      const b = data.subarray(pos, pos + n)
      if (!a.equals(b)) {
        for (let k = 0; k < n; k++) if (a[k] !== b[k]) return off + pos + k
      }
      pos += n
    }
    return -1
  }

  private slice (offset: number, len: number): Buffer {
    const parts: Buffer[] = []
    let i = this.find(offset)
    let at = offset
    for (let c = this.chunks.at(i); len > 0 && c; c = this.chunks.at(++i)) {
      const p = c.buf.subarray(at - c.off, at - c.off + len)
      parts.push(p)
      len -= p.length
      at += p.length
    }
    return Buffer.concat(parts)
  }
}
