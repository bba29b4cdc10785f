// Replies that legitimately differ between two correct copies (INFO, TIME, KEYS order, the
// id in HELLO's reply...), made comparable by byte offset. Each replica's raw output for one
// connection is turned here into a *canonical* stream before it enters the OutputStream, so
// comparison, release, stall debts and the splice at failover work on offsets unchanged.
//
//   raw(primary) ──reader──▶ canonical = raw; each uncompared reply is remembered by its rank
//   raw(backup)  ──reader──▶ compared reply: its own bytes; k-th uncompared reply: the
//                            primary's k-th uncompared reply instead (the same length then)
//
// Every replica's output is framed by its own ReplyReader (Session.reader()); replies are
// matched by ordinal: the n-th reply of a backup answers the same request as the primary's
// n-th (all copies get the same requests in the same order). A reply's flag (compared or not)
// is known at its mark, its end. Until a backup's reply n is settled, by its own mark or by
// the primary's reply n being complete, its bytes pass only while they equal the primary's
// bytes of reply n so far (such bytes are canonical either way); the rest is held:
//   - flagged compared (by either side): its own bytes pass; the OutputStream compares them;
//   - flagged uncompared: the primary's bytes replace its own, as far as the primary has
//     produced them; once the primary's reply is complete its later replies go on.
// From the first byte where a backup's unsettled reply differs from the primary's, its own
// bytes are not kept (only a few, for the divergence report): they are replaced
// (uncompared) or a divergence (compared). So what is held is bounded by how far a replica
// runs ahead of the other, the case the caller's lag cap pauses; it never waits for itself.
// (Until its own mark comes, such a backup confirms nothing more of that reply: its stall
// clock runs meanwhile, as it would for a backup that is slow to answer.)
// A backup whose own mark contradicts the primary's flag for the same reply is reported
// ('misaligned': the copies' replies do not correspond, a divergence) and passes raw.
//
// Roles change (failover, switchover): the replica promoted becomes the reference.
//   - Replies the old primary completed keep its flags and bytes for everyone, the new
//     primary included: the client was or will be sent them (the stream kept them), and
//     every copy then emits the same bytes for them. They are correct answers at that point
//     in the order, from a copy that was correct then.
//   - The reply the old primary left unfinished, and all after it, are the new primary's
//     own: its held bytes are emitted as its own, its uncompared replies are remembered from
//     then on. Its bytes of that reply so far were emitted only as far as they equalled the
//     old primary's, so its canonical reply is its own. If it had dropped its own bytes of
//     that reply (they differed from the old primary's), it cannot produce it: promote()
//     says so, and the connection cannot be spliced (the caller closes it, as splice_failed).
//     A backup that confirmed bytes of that reply the new primary does not reproduce is
//     caught by the stream (a splice that fails, or a divergence).
//   - A new primary behind the old one first catches up as a backup (it never waits then:
//     those replies are settled), then takes over at the old primary's unfinished reply.
//
// Output that cannot be framed (a reader error): that replica's output passes raw from then
// on, its held bytes first; the byte comparison then decides (a later uncompared reply will
// likely differ). If it is the primary's, no reply can be matched any more: every replica
// passes raw. A replica whose output went raw stays raw (it is never framed again).
//
// Ends: a backup's raw end with output still held is not its canonical end; end() says so,
// and `ended` is called once that output was emitted. Once the primary's output ended too,
// what a backup holds can never be settled: it is emitted as its own, and the ends and bytes
// comparison decide.
//
// Cost: a connection without uncompared replies takes a fast path per chunk (one look at
// each mark), and its chunks are emitted as the same Buffer objects. Nothing is copied but
// those few bytes; remembered replies and forwarded feed lines are views of the primary's
// chunks.
//
// MONITOR: after its reply (`+OK`, compared), each copy streams a feed of the commands it
// runs, with its own clocks and client addresses, and its own control connection's probes
// among them: the copies' feeds have different lines, and no ordinal pairs them. So once the
// reference has passed a MONITOR reply that started the feed, the connection is *mirrored*:
//   - the reference's raw output is its own, and every backup's canonical output too: each
//     complete feed line (or reply) of the reference is emitted to every mirrored backup as
//     it comes (a line is forwarded whole, so a new primary can take over at a line of its
//     own); a backup not there yet gets them once it has passed its own MONITOR reply;
//   - a backup's own output after its MONITOR reply is dropped, `replaced` once per reply or
//     feed line (each mark its reader frames);
//   - a backup that reaches its MONITOR reply first holds it until the reference's is
//     complete: only then is it known whether a feed follows (an error, or +QUEUED inside
//     MULTI, starts none).
// The mirror lasts for the rest of the connection: replies to commands sent on it later
// (PING, RESET, then anything) are the primary's, not compared. Ending it at RESET would mean
// holding each backup's output after its +RESET until the primary's is forwarded, and pairing
// replies anew from there; a client that RESETs a MONITOR connection to reuse it is rare. A
// mirrored backup confirms bytes it did not produce: on that connection `match` releases a
// feed line once it is complete, and a hung backup is not seen stalling there (its other
// connections and its health checks still show it). Its canonical output ends when the
// reference's does. A reader error while mirrored only hides where lines end: the
// reference's bytes are then forwarded as they come, and such a backup cannot take over.
// Roles change while mirrored: the promoted replica's own output is the reference from its
// next feed line on (the rest of the line it was in is dropped); the old reference's
// unfinished line is forgotten (the stream splices at the last line forwarded; if the client
// had part of it, the splice fails). The client's feed then skips or repeats commands around
// the failover: the two feeds were never the same, and MONITOR promises no more.
//
// Modules: one replica's state (replies-side.ts), the mirror (replies-mirror.ts), coalesced
// emission (replies-emit.ts), views of byte lists (replies-bytes.ts).

import type { ReplyMark, ReplyReader, Session } from '../protocol/types.js'
import { Queue } from '../util/queue.js'
import { agree, slice } from './replies-bytes.js'
import { Emitter } from './replies-emit.js'
import { Mirror, opensFeed, startsFeed } from './replies-mirror.js'
import { NONE, Side } from './replies-side.js'

/** Why a replica's output passes raw from now on. */
export type RawReason =
  | 'reader_error'        // its output cannot be framed
  | 'misaligned'          // its replies do not correspond to the primary's (a divergence)
  | 'reference_unframed'  // the primary's output cannot be framed: nothing can be matched

/** How the aligner hands its results to the connection. Called synchronously. */
export interface AlignerHooks {
  /** Canonical bytes of replica r, in order (push them into the OutputStream). */
  emit (r: number, chunk: Buffer): void
  /** r's raw output ended earlier (end() said false): its canonical output ends here. */
  ended (r: number): void
  /** r's output passes raw from its reply `reply` on; `error`: its reader's, if any. */
  raw (r: number, why: RawReason, reply: number, error: string | null): void
  /** A reply of r was replaced by the primary's (counted, not compared). */
  replaced (r: number): void
}

/** An uncompared reply of the reference, kept until every replica has passed it. */
interface Remembered { ordinal: number, bytes: Buffer[], size: number }

export class ReplyAligner {
  private readonly sides: Side[]
  /** The reference replica (the primary). */
  private ref: number
  /** Replies the reference has completed (with the old references' before a promotion). */
  private refReplies = 0
  /** The reference's bytes of its reply `refReplies`, so far. */
  private partial: Buffer[] = []
  private partialBytes = 0
  /** Its uncompared replies; the first has rank `recBase` among the connection's. */
  private readonly records = new Queue<Remembered>()
  private recBase = 0
  private recordBytes = 0
  /** Set once the reference passed a MONITOR reply: the rest of the connection is mirrored. */
  private mirror: Mirror | null = null
  private readonly emitter: Emitter

  constructor (private readonly session: Session, live: readonly boolean[], primary: number,
    private readonly hooks: AlignerHooks) {
    this.ref = primary
    this.sides = live.map((l, r) =>
      new Side(l ? session.reader() : null, l, r === primary ? 'ref' : 'start'))
    this.emitter = new Emitter(this.sides, (r, chunk) => { this.hooks.emit(r, chunk) })
  }

  /** The reference replica. */
  get primary (): number {
    return this.ref
  }

  /** Bytes of r's output held here, not emitted yet (count them with its ahead bytes). */
  held (r: number): number {
    return this.sides[r]?.held ?? 0
  }

  /**
   * Bytes of the reference kept here: its uncompared replies not yet passed by every
   * replica, its reply (or feed line) in progress, and its feed for the replicas not there
   * yet. Views of chunks the OutputStream mostly holds too.
   */
  get kept (): number {
    const m = this.mirror
    return this.recordBytes + this.partialBytes + (m ? m.tailBytes + m.backlogBytes : 0)
  }

  /** No replica holds output or waits for the reference (a switchover may swap). */
  get idle (): boolean {
    return (this.mirror?.tailBytes ?? 0) === 0 &&
      this.sides.every((s) => !s.live || (s.held === 0 && !s.blocked))
  }

  /** Raw output of replica r. Canonical bytes go out through hooks.emit, r's or others'. */
  output (r: number, data: Buffer): void {
    const s = this.sides[r]
    if (!s?.live || s.endDone || data.length === 0) return
    if (s.mode === 'raw' || !s.reader) return this.hooks.emit(r, data)
    if (s.mode === 'mirror') return this.mirrored(r, s, s.reader, data)
    const marks = s.reader.push(data)
    const framed = s.reader.error === null
    if (framed && this.quick(r, s, data, marks)) return
    this.emitter.input = data
    let from = 0
    for (const m of marks) {
      this.step(r, s, from === 0 && m.end === data.length ? data : data.subarray(from, m.end), m)
      from = m.end
    }
    const rest = from === 0 ? data : data.subarray(from)
    if (framed && rest.length > 0) this.step(r, s, rest, null)
    this.emitter.input = null
    if (!framed) this.unframed(r, s, rest)
    if (r === this.ref) this.driveAll()
    this.flush()
  }

  /**
   * r's raw output ended. True: its canonical output ends now, after what was emitted.
   * False: it still holds output (or it is mirrored and the reference goes on);
   * hooks.ended(r) is called once that is emitted.
   */
  end (r: number): boolean {
    const s = this.sides[r]
    if (!s?.live || s.endDone) return true
    s.ended = true
    if (r === this.ref) {
      // Its output is complete: so is its last feed line, whole or not.
      if (s.mode === 'mirror') this.forward(this.mirror?.takeTail() ?? [])
      this.closeBackups(r)
    } else if (s.held > 0 || s.blocked || s.mode === 'mirror') {
      if (!this.sides[this.ref]?.ended) return false
      this.goRaw(r, s, null)
    }
    this.flush()
    s.endDone = true
    this.trim()
    return true
  }

  /** Replica r is gone: it holds nothing, and nothing is kept for it. */
  drop (r: number): void {
    const s = this.sides[r]
    if (!s) return
    if (s.reader) this.session.release?.(s.reader)
    s.live = false
    s.mode = 'raw'
    s.clearOpen()
    s.takeQueue()
    this.trim()
  }

  /**
   * Replica r joins at a re-seed's cut, at a reply boundary (idle: every replica has passed
   * every reply): its next reply is the reference's next.
   */
  join (r: number): void {
    const old = this.sides[r]?.reader
    if (old) this.session.release?.(old)
    const s = new Side(this.session.reader(), true, 'start')
    s.replies = this.refReplies
    s.uncompared = this.sides[this.ref]?.uncompared ?? this.recBase + this.records.length
    this.sides[r] = s
  }

  /**
   * `to` becomes the reference (drop the old primary first on a failover; on a switchover
   * it goes on as a backup). False: `to` cannot produce the reply it was in (see the header):
   * the connection cannot be spliced.
   */
  promote (to: number): boolean {
    const s = this.sides[to]
    if (!s?.live || to === this.ref) return true
    const old = this.sides[this.ref]
    this.ref = to
    if (old?.live && old.mode === 'ref') {
      // Switchover: it goes on as a backup, in the reply it was producing.
      old.mode = 'open'
      old.sent = this.partialBytes
    }
    // The old reference's unfinished feed line: the new one goes on at a line of its own.
    this.mirror?.takeTail()
    if (s.mode === 'raw') {
      this.allRaw('reference_unframed')
      return true
    }
    if (s.mode === 'mirror') return this.promoteMirrored(to, s)
    if (s.replies < this.refReplies) {
      // It catches up as a backup, then takes over at the old primary's unfinished reply.
      this.partial = []
      this.partialBytes = 0
      return true
    }
    if (s.lost) {
      // The connection cannot be spliced (the caller closes it): nothing the new primary
      // holds may reach the client first.
      this.hooks.raw(to, 'reference_unframed', s.replies, s.reader?.error ?? null)
      return false
    }
    this.takeOver(to, s)
    this.driveAll()
    this.checkEnd(to, s)
    this.flush()
    return true
  }

  // ---- fast paths ------------------------------------------------------------------------

  private quick (r: number, s: Side, data: Buffer, marks: readonly ReplyMark[]): boolean {
    return s.mode === 'ref' ? this.refFast(r, s, data, marks) : this.fast(r, s, data, marks)
  }

  // The reference, when no replica compares against its reply in progress and every reply
  // is compared (and starts no feed): emitted as it is, only counted.
  private refFast (r: number, s: Side, data: Buffer, marks: readonly ReplyMark[]): boolean {
    if (this.sides.some((b) => b.live && b.mode === 'open')) return false
    for (const m of marks) if (!m.compare || opensFeed(m)) return false
    this.hooks.emit(r, data)
    const last = marks.at(-1)
    if (last === undefined) {
      this.partial.push(data)
      this.partialBytes += data.length
      return true
    }
    s.replies += marks.length
    this.refReplies = s.replies
    this.partialBytes = data.length - last.end
    this.partial = this.partialBytes > 0 ? [data.subarray(last.end)] : []
    return true
  }

  // A replica whose replies in this chunk are all compared, with no uncompared reply of the
  // reference among them, and whose trailing partial reply is known compared: emitted as is.
  private fast (r: number, s: Side, data: Buffer, marks: readonly ReplyMark[]): boolean {
    if (s.mode !== 'start' && s.mode !== 'pass') return false
    for (const m of marks) if (!m.compare || opensFeed(m)) return false
    const whole = marks.at(-1)?.end === data.length
    const tail = s.replies + marks.length
    // Reaching the feed is done reply by reply (see done()).
    if (this.mirror !== null && tail >= this.mirror.at) return false
    // A new primary catching up: its replies from the old primary's unfinished one are the
    // reference's (see takeOver), not a backup's.
    if (r === this.ref && tail + (whole ? 0 : 1) > this.refReplies) return false
    const rec = this.record(s)
    if (rec !== undefined && rec.ordinal < tail + (whole ? 0 : 1)) return false
    if (!whole && !(marks.length === 0 && s.mode === 'pass') && tail >= this.refReplies) {
      return false
    }
    this.hooks.emit(r, data)
    s.replies = tail
    s.mode = whole ? 'start' : 'pass'
    return true
  }

  // ---- pieces ----------------------------------------------------------------------------

  // One piece of r's output: the rest of a reply (mark) or part of one (no mark).
  private step (r: number, s: Side, buf: Buffer, mark: ReplyMark | null): void {
    if (s.queue.length > 0 || s.blocked) return s.enqueue(buf, mark)
    this.take(r, s, buf, mark)
  }

  private take (r: number, s: Side, buf: Buffer, mark: ReplyMark | null): void {
    if (s.mode === 'start') this.begin(r, s)
    switch (s.mode) {
      case 'raw':
        this.out(r, buf)
        break
      case 'ref':
        this.out(r, buf)
        this.refPiece(r, s, buf, mark)
        break
      case 'mirror':
        this.feedPiece(r, s, buf, mark)
        break
      case 'pass':
        this.out(r, buf)
        if (mark) mark.compare ? this.done(r, s, true) : this.goRaw(r, s, 'misaligned')
        break
      case 'swap':
        if (mark) mark.compare ? this.goRaw(r, s, 'misaligned') : this.done(r, s, false)
        break
      default:
        this.absorb(r, s, buf, mark)
    }
  }

  // A reply begins: settled if the reference has completed it, else open.
  private begin (r: number, s: Side): void {
    if (s.replies < this.refReplies) {
      const rec = this.record(s)
      s.mode = rec?.ordinal === s.replies ? 'swap' : 'pass'
      if (rec && s.mode === 'swap') for (const b of rec.bytes) this.out(r, b)
    } else {
      s.mode = r === this.ref ? 'ref' : 'open'
    }
  }

  // The reference's bytes: kept while its reply is in progress, remembered if uncompared.
  private refPiece (r: number, s: Side, buf: Buffer, mark: ReplyMark | null): void {
    if (buf.length > 0) {
      this.partial.push(buf)
      this.partialBytes += buf.length
    }
    if (!mark) return
    const k = this.refReplies
    const feed = startsFeed(mark, this.partial)
    if (!mark.compare) {
      this.records.push({ ordinal: k, bytes: this.partial, size: this.partialBytes })
      this.recordBytes += this.partialBytes
      s.uncompared++
      // A replica already past reply k took it for compared.
      this.sides.forEach((b, i) => {
        if (i !== r && b.live && b.mode !== 'raw' && b.replies > k) this.goRaw(i, b, 'misaligned')
      })
    }
    this.partial = []
    this.partialBytes = 0
    s.replies++
    this.refReplies = s.replies
    if (feed) this.startMirror(r, s)
  }

  // Part of an open reply: kept (or, past a difference, dropped), then settled if it can be.
  private absorb (r: number, s: Side, buf: Buffer, mark: ReplyMark | null): void {
    s.hold(buf)
    if (mark) s.mark = mark
    this.settle(r, s)
  }

  // Emit what can be of an open reply, and settle it once its flag is known.
  private settle (r: number, s: Side): void {
    if (s.replies < this.refReplies) return this.resolve(r, s)
    const same = s.replies === this.refReplies
    if (same && !s.lost && s.keepBytes > 0 && this.partialBytes > s.sent) this.match(r, s)
    const mark = s.mark
    if (mark === null) return
    if (mark.compare) {
      // MONITOR's reply: whether a feed follows is for the reference's reply to say.
      if (opensFeed(mark)) return
      this.emitOwn(r, s)
      return this.done(r, s, true)
    }
    if (!same) return
    // Uncompared: the reference's bytes, as far as they go; its own are kept only while they
    // are the same (a promotion may need them), and a shorter reply of its own is not.
    if (!s.lost && s.keepBytes === 0 && this.partialBytes > s.sent) s.lost = true
    if (s.lost) {
      s.dump = NONE
      for (const b of slice(this.partial, s.sent, this.partialBytes)) this.out(r, b)
      s.sent = this.partialBytes
    }
  }

  // The reference completed the open reply: its flag decides.
  private resolve (r: number, s: Side): void {
    const rec = this.record(s)
    const uncompared = rec?.ordinal === s.replies
    const mark = s.mark
    if (mark && mark.compare === uncompared) return this.goRaw(r, s, 'misaligned')
    if (rec && uncompared) {
      for (const b of slice(rec.bytes, s.sent, rec.size)) this.out(r, b)
      s.clearOpen()
      s.mode = 'swap'
      if (mark) this.done(r, s, false)
    } else {
      this.emitOwn(r, s)
      s.clearOpen()
      s.mode = 'pass'
      if (mark) this.done(r, s, true)
    }
  }

  // Emit r's kept bytes that equal the reference's; from a difference on, keep none.
  private match (r: number, s: Side): void {
    const n = Math.min(s.keepBytes, this.partialBytes - s.sent)
    const c = agree(s.keep, slice(this.partial, s.sent, s.sent + n))
    if (c > 0) {
      for (const b of slice(s.keep, 0, c)) this.out(r, b)
      s.passed(c)
    }
    if (c < n) s.lose()
  }

  private emitOwn (r: number, s: Side): void {
    for (const b of s.takeOwn()) this.out(r, b)
  }

  private done (r: number, s: Side, compared: boolean): void {
    s.replies++
    s.clearOpen()
    s.mode = 'start'
    if (!compared) {
      s.uncompared++
      this.hooks.replaced(r)
      this.trim()
    }
    if (this.mirror?.at === s.replies) this.enterMirror(r, s)
  }

  // ---- the reference moves -------------------------------------------------------------

  // The reference produced more: settle the replicas waiting for it.
  private driveAll (): void {
    this.sides.forEach((s, r) => {
      if (r === this.ref || !s.live || s.endDone || s.mode !== 'open') return
      this.settle(r, s)
      this.drain(r, s)
      this.checkEnd(r, s)
    })
  }

  private drain (r: number, s: Side): void {
    for (let p = s.queue.peek(); p && s.live && !s.blocked; p = s.queue.peek()) {
      s.dequeue()
      this.take(r, s, p.buf, p.mark)
    }
  }

  // The promoted replica takes over in its open reply (or at a reply boundary).
  private takeOver (to: number, s: Side): void {
    const same = s.replies === this.refReplies
    this.partial = same ? slice(this.partial, 0, s.sent) : []
    this.partialBytes = same ? s.sent : 0
    this.refReplies = s.replies
    const { keep, mark } = s
    s.clearOpen()
    s.mode = 'ref'
    for (const b of keep) {
      this.out(to, b)
      this.refPiece(to, s, b, null)
    }
    if (mark) this.refPiece(to, s, NONE, mark)
    this.drain(to, s)
  }

  // ---- mirrored (MONITOR) ----------------------------------------------------------------

  // The reference completed a MONITOR reply that starts the feed: mirrored from here on.
  private startMirror (r: number, s: Side): void {
    this.mirror = new Mirror(s.replies)
    s.mode = 'mirror'
    s.mid = false
    // A replica already past that reply did not hold it: its replies are not the same.
    this.sides.forEach((b, i) => {
      if (i !== r && b.live && b.mode !== 'raw' && b.replies >= s.replies) {
        this.goRaw(i, b, 'misaligned')
      }
    })
  }

  // r passed its own MONITOR reply: the reference's feed so far, then as it comes.
  private enterMirror (r: number, s: Side): void {
    s.mode = 'mirror'
    s.mid = false
    for (const b of this.mirror?.kept ?? []) this.out(r, b)
    this.trim()
  }

  // A chunk of a mirrored replica. The reference's passes, and its complete lines are
  // forwarded; a backup's is dropped, counted by mark.
  private mirrored (r: number, s: Side, reader: ReplyReader, data: Buffer): void {
    const marks = reader.error === null ? reader.push(data) : []
    const framed = reader.error === null
    const cut = framed ? (marks.at(-1)?.end ?? 0) : data.length
    s.mid = !framed || cut !== data.length
    if (r !== this.ref) {
      for (let i = 0; i < marks.length; i++) this.hooks.replaced(r)
      return
    }
    let from = 0
    if (s.skip) {
      // Promoted inside a line of its own: the client gets none of it.
      const first = marks[0]
      if (first === undefined && framed) return
      s.skip = false
      if (first) {
        from = first.end
        this.hooks.replaced(r)
      }
    }
    this.out(r, from === 0 ? data : data.subarray(from))
    const m = this.mirror
    if (m && cut > from) this.forward(m.piece(data.subarray(from, cut), true))
    if (m && cut < data.length) m.piece(data.subarray(Math.max(from, cut)), false)
    this.flush()
  }

  // A piece of a mirrored replica, in the chunk where it passed its MONITOR reply.
  private feedPiece (r: number, s: Side, buf: Buffer, mark: ReplyMark | null): void {
    s.mid = mark === null
    if (r !== this.ref) {
      if (mark) this.hooks.replaced(r)
      return
    }
    this.out(r, buf)
    this.forward(this.mirror?.piece(buf, mark !== null) ?? [])
  }

  // Complete lines of the reference, to every mirrored backup (and kept for the others).
  private forward (pieces: readonly Buffer[]): void {
    if (pieces.length === 0) return
    this.sides.forEach((b, i) => {
      if (i === this.ref || !b.live || b.mode !== 'mirror') return
      for (const p of pieces) this.out(i, p)
    })
    if (this.pending()) this.mirror?.keep(pieces)
  }

  // Some replica has not reached the feed yet, and may.
  private pending (): boolean {
    return this.sides.some((b) => b.live && !b.endDone && b.mode !== 'raw' && b.mode !== 'mirror')
  }

  // A mirrored backup becomes the reference: its own output from its next line on.
  private promoteMirrored (to: number, s: Side): boolean {
    // Without its framing, no line of its own can be found to start at.
    if (s.reader === null || s.reader.error !== null) return false
    s.skip = s.mid
    this.checkEnd(to, s)
    if (s.endDone) this.closeBackups(to)
    this.flush()
    return true
  }

  // ---- raw and ends ----------------------------------------------------------------------

  // r's output could not be framed: the rest of this chunk and all after pass raw (while
  // mirrored, the reference's is forwarded as it is: its lines cannot be told any more).
  private unframed (r: number, s: Side, rest: Buffer): void {
    if (s.mode === 'mirror') {
      s.mid = true
      if (r === this.ref) {
        this.out(r, rest)
        this.forward(this.mirror?.piece(rest, true) ?? [])
      }
      return
    }
    this.goRaw(r, s, 'reader_error')
    this.out(r, rest)
    if (r === this.ref) this.allRaw('reference_unframed')
  }

  private allRaw (why: RawReason): void {
    this.sides.forEach((s, r) => { if (s.live) this.goRaw(r, s, why) })
  }

  // From now on r's output passes raw: what it holds first, as its own. why null: its end.
  private goRaw (r: number, s: Side, why: RawReason | null): void {
    if (s.mode === 'raw') return
    const held = s.takeOwn()
    s.mode = 'raw'
    s.clearOpen()
    for (const b of held) this.out(r, b)
    for (const p of s.takeQueue()) this.out(r, p.buf)
    this.trim()
    if (why === null) return
    this.flush()
    this.hooks.raw(r, why, s.replies, s.reader?.error ?? null)
  }

  // Nothing more comes from the reference r: what the others hold is theirs.
  private closeBackups (r: number): void {
    this.sides.forEach((b, i) => {
      if (i === r || !b.live || !b.ended || b.endDone) return
      this.goRaw(i, b, null)
      b.endDone = true
      this.flush()
      this.hooks.ended(i)
    })
  }

  private checkEnd (r: number, s: Side): void {
    if (!s.live || !s.ended || s.endDone || s.blocked || s.held > 0) return
    // A mirrored backup's output is the reference's: it ends with it.
    if (s.mode === 'mirror' && r !== this.ref && this.sides[this.ref]?.ended !== true) return
    s.endDone = true
    this.flush()
    this.hooks.ended(r)
  }

  // ---- bookkeeping -----------------------------------------------------------------------

  // The reference's next uncompared reply that r has not passed.
  private record (s: Side): Remembered | undefined {
    return this.records.at(s.uncompared - this.recBase)
  }

  // Forget the uncompared replies every replica still aligned has passed, and the feed kept
  // once no replica needs it.
  private trim (): void {
    let min = Infinity
    for (const s of this.sides) if (s.live && s.mode !== 'raw') min = Math.min(min, s.uncompared)
    for (let rec = this.records.peek(); rec && this.recBase < min; rec = this.records.peek()) {
      this.records.shift()
      this.recordBytes -= rec.size
      this.recBase++
    }
    if (this.mirror && !this.pending()) this.mirror.forget()
  }

  private out (r: number, buf: Buffer): void {
    this.emitter.out(r, buf)
  }

  private flush (): void {
    this.emitter.flush()
  }
}
