// The output stream of one client connection, as every replica produces it.
//
//            base          written      committed        end
//   ref:      |==============|============|================|     primary's bytes (chunks)
//   backup b: ------------------->produced[b]                   compared against ref
//   backup c: --------------------------------------------------->|~~ahead~~|  waits for ref
//
// The reference is the primary's output. A backup's bytes below `end` are compared with it
// at once; bytes beyond `end` wait in its `ahead` list until the primary catches up. Bytes
// are released to the client (`written`) only up to `committed`, which the front moves by
// the output-commit rule. The reference is kept from `base`: the lowest offset that the
// client or some live backup still needs. Pure bookkeeping: no sockets, no timers.

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

const DUMP = 16

export class OutputStream {
  private chunks: Chunk[] = []
  private head = 0
  end = 0
  written = 0
  committed = 0
  primary: number
  readonly live: boolean[]
  readonly produced: number[]
  readonly aheadBytes: number[]
  private readonly ahead: Buffer[][]
  // Stall detection: replica r owes bytes up to oweTarget[r] since oweSince[r] (-1: owes none).
  private readonly oweTarget: number[]
  private readonly oweSince: number[]
  private readonly suspended: boolean[]

  constructor (live: boolean[], primary: number) {
    const n = live.length
    this.live = live.slice()
    this.primary = primary
    this.produced = new Array<number>(n).fill(0)
    this.aheadBytes = new Array<number>(n).fill(0)
    this.ahead = Array.from({ length: n }, () => [])
    this.oweTarget = new Array<number>(n).fill(-1)
    this.oweSince = new Array<number>(n).fill(0)
    this.suspended = new Array<boolean>(n).fill(false)
  }

  /** Lowest offset still held. */
  get base (): number {
    return this.head < this.chunks.length ? this.chunks[this.head].off : this.end
  }

  /**
   * Bytes of reference held (unreleased or not yet confirmed by every live backup). After a
   * promotion, released bytes kept only so that the new primary's replay can be verified do
   * not count: they are bounded (nothing is appended until the replay is done) and pausing
   * the primary for them would stop the very replay that frees them.
   */
  get held (): number {
    if (!this.replaying()) return this.end - this.base
    const i = this.find(this.keepFrom())
    return this.end - Math.max(this.base, i < this.chunks.length ? this.chunks[i].off : this.end)
  }

  /**
   * Bytes produced by replica r. Returns the mismatches found: r's own (its bytes differ
   * from the reference), or, when r is the primary, those of backups whose ahead bytes
   * differ from what the primary has now produced.
   */
  push (r: number, buf: Buffer, dep: number, now: number): Mismatch[] {
    const found: Mismatch[] = []
    let data = buf
    const off = this.produced[r]
    if (off < this.end) {
      const n = Math.min(data.length, this.end - off)
      const bad = this.compare(off, data.subarray(0, n))
      if (bad >= 0) {
        found.push({ replica: r, offset: bad, expected: this.slice(bad, DUMP), actual: data.subarray(bad - off, bad - off + DUMP) })
        return found
      }
      this.produced[r] = off + n
      data = data.subarray(n)
    }
    if (data.length > 0) {
      if (r === this.primary) {
        this.chunks.push({ off: this.end, buf: data, dep, at: now })
        this.end += data.length
        this.produced[r] = this.end
        for (let o = 0; o < this.live.length; o++) {
          if (o !== r && this.live[o] && this.aheadBytes[o] > 0) found.push(...this.refeed(o, now))
        }
      } else {
        this.ahead[r].push(data)
        this.aheadBytes[r] += data.length
        this.produced[r] += data.length
      }
    }
    this.noteProgress(now)
    return found
  }

  /** Move committed forward over chunks whose inputs every backup has acknowledged. */
  commitAcked (seq: number): void {
    let i = this.find(this.committed)
    while (i < this.chunks.length && this.chunks[i].dep <= seq) {
      this.committed = this.chunks[i].off + this.chunks[i].buf.length
      i++
    }
  }

  /** When the oldest uncommitted byte was produced (undefined: everything is committed). */
  get uncommittedSince (): number | undefined {
    return this.committed < this.end ? this.chunks[this.find(this.committed)]?.at : undefined
  }

  /** Move committed forward to `offset` (capped at end). */
  commitTo (offset: number): void {
    const to = Math.min(offset, this.end)
    if (to > this.committed) this.committed = to
  }

  /** The lowest offset every live backup has produced and matched (end if none). */
  matchedByBackups (): number {
    let m = this.end
    for (let r = 0; r < this.live.length; r++) {
      if (r !== this.primary && this.live[r]) m = Math.min(m, this.produced[r])
    }
    return m
  }

  /** Take the committed bytes not yet released, marking them released. */
  take (): Buffer[] {
    const out: Buffer[] = []
    let i = this.find(this.written)
    while (this.written < this.committed && i < this.chunks.length) {
      const c = this.chunks[i]
      const from = this.written - c.off
      const to = Math.min(c.buf.length, this.committed - c.off)
      out.push(from === 0 && to === c.buf.length ? c.buf : c.buf.subarray(from, to))
      this.written = c.off + to
      i++
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
    if (this.replaying()) keepFrom = Math.min(keepFrom, this.produced[this.primary])
    while (this.head < this.chunks.length) {
      const c = this.chunks[this.head]
      if (c.off + c.buf.length > keepFrom) break
      this.head++
    }
    if (this.head > 64 && this.head * 2 > this.chunks.length) {
      this.chunks = this.chunks.slice(this.head)
      this.head = 0
    }
  }

  /** Replica r is gone (down, stale, diverged): it no longer holds anything back. */
  drop (r: number): void {
    this.live[r] = false
    this.ahead[r] = []
    this.aheadBytes[r] = 0
    this.oweTarget[r] = -1
    this.trim()
  }

  /**
   * Make backup `to` the primary. The old primary's bytes are kept as far as the client has
   * them or a live replica confirmed them; the new primary must reproduce those exactly
   * (its next pushes are compared), and everything after comes from it.
   */
  promote (to: number, dep: number, now: number): Mismatch[] {
    this.drop(this.primary)
    let keep = this.written
    for (let r = 0; r < this.live.length; r++) {
      if (this.live[r]) keep = Math.max(keep, Math.min(this.produced[r], this.end))
    }
    this.truncate(Math.min(keep, this.end))
    this.primary = to
    const found: Mismatch[] = []
    if (this.aheadBytes[to] > 0) {
      // Its ahead bytes start at `end` (it produced past the old reference): they become
      // the reference, and other backups' ahead bytes are compared with them.
      const pieces = this.ahead[to]
      this.produced[to] -= this.aheadBytes[to]
      this.ahead[to] = []
      this.aheadBytes[to] = 0
      for (const p of pieces) found.push(...this.push(to, p, dep, now))
    }
    for (let r = 0; r < this.live.length; r++) this.oweTarget[r] = -1
    this.noteProgress(now)
    return found
  }

  /**
   * Planned switchover: backup `to` has produced exactly the reference (nothing less, nothing
   * ahead), so it simply becomes the primary and the old primary stays a live backup.
   */
  swap (to: number, now: number): boolean {
    if (!this.live[to] || this.produced[to] !== this.end || this.aheadBytes[to] !== 0) return false
    this.primary = to
    for (let r = 0; r < this.live.length; r++) this.oweTarget[r] = -1
    this.noteProgress(now)
    return true
  }

  /** Whether every live replica has produced exactly the reference. */
  get inSync (): boolean {
    for (let r = 0; r < this.live.length; r++) {
      if (this.live[r] && (this.produced[r] !== this.end || this.aheadBytes[r] !== 0)) return false
    }
    return true
  }

  /** Stop (suspend) or restart the stall clock of r: the front paused its reads. */
  suspend (r: number, on: boolean, now: number): void {
    this.suspended[r] = on
    this.oweTarget[r] = -1
    if (!on) this.noteProgress(now)
  }

  /** Replicas that have owed output others produced for longer than `stallMs`. */
  stalled (now: number, stallMs: number): number[] {
    const out: number[] = []
    for (let r = 0; r < this.live.length; r++) {
      if (this.live[r] && this.oweTarget[r] >= 0 && !this.suspended[r] && now - this.oweSince[r] > stallMs) out.push(r)
    }
    return out
  }

  // A replica that fell behind the furthest producer owes those bytes from now on; the debt
  // is paid when it reaches that offset (then a new one starts if it is still behind), so
  // a replica that keeps up with a steady lag is never taken for stalled.
  private noteProgress (now: number): void {
    let max = this.end
    for (let r = 0; r < this.live.length; r++) if (this.live[r]) max = Math.max(max, this.produced[r])
    for (let r = 0; r < this.live.length; r++) {
      if (!this.live[r] || this.suspended[r]) continue
      if (this.oweTarget[r] >= 0 && this.produced[r] >= this.oweTarget[r]) this.oweTarget[r] = -1
      if (this.oweTarget[r] < 0 && this.produced[r] < max) {
        this.oweTarget[r] = max
        this.oweSince[r] = now
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
    return this.live[this.primary] && this.produced[this.primary] < this.end
  }

  // Compare r's backed-up ahead bytes with the reference that now covers them.
  private refeed (r: number, now: number): Mismatch[] {
    const pieces = this.ahead[r]
    this.produced[r] -= this.aheadBytes[r]
    this.ahead[r] = []
    this.aheadBytes[r] = 0
    for (let i = 0; i < pieces.length; i++) {
      if (this.produced[r] >= this.end) {
        for (const p of pieces.slice(i)) {
          this.ahead[r].push(p)
          this.aheadBytes[r] += p.length
          this.produced[r] += p.length
        }
        break
      }
      const m = this.push(r, pieces[i], 0, now)
      if (m.length > 0) return m
    }
    return []
  }

  private truncate (to: number): void {
    while (this.chunks.length > this.head) {
      const c = this.chunks[this.chunks.length - 1]
      if (c.off >= to) { this.chunks.pop(); continue }
      if (c.off + c.buf.length > to) c.buf = c.buf.subarray(0, to - c.off)
      break
    }
    this.end = to
    if (this.committed > to) this.committed = to
    for (let r = 0; r < this.live.length; r++) if (this.produced[r] > to && this.aheadBytes[r] === 0) this.produced[r] = to
  }

  // Index of the chunk holding `offset` (chunks.length if past the end).
  private find (offset: number): number {
    let lo = this.head
    let hi = this.chunks.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      const c = this.chunks[mid]
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
      const c = this.chunks[i++]
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
    while (len > 0 && i < this.chunks.length) {
      const c = this.chunks[i++]
      const p = c.buf.subarray(at - c.off, at - c.off + len)
      parts.push(p)
      len -= p.length
      at += p.length
    }
    return Buffer.concat(parts)
  }
}
