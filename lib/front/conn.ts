// One client connection: its inbound events go into the log and to every serving replica;
// the replicas' output comes back here, is compared, and the primary's is released to the
// client by the output-commit rule, with backpressure both ways.
//
//   client ──data/end/close──▶ log(seq) ──apply──▶ every serving replica
//   client ◀──write── commit rule ◀── OutputStream ◀──output── every replica
//
// Pure per-connection logic: the client socket is any Duplex-like object, replicas are
// reached through their transports, and what concerns roles goes through ConnEnv.

import { performance } from 'node:perf_hooks'
import type { Config } from '../config/index.js'
import type { Logger } from '../logger.js'
import type { Entry, EntryType, InputLog } from './log.js'
import { OutputStream, type Mismatch } from './output.js'
import { ReplyAligner, type RawReason } from './replies.js'
import type { Replica } from './replica.js'
import { protocolFor } from '../protocol/index.js'
import type { Carry, Session } from '../protocol/types.js'
import type { FrontCounters } from './counters.js'
import { ReplaySkips } from './replay.js'

/** The part of a client socket a connection uses (a net.Socket in production). */
export interface ClientSocket {
  /** `done` runs once this and every earlier write reached the kernel (or failed). */
  write (data: Buffer, done?: () => void): boolean
  /** `done` runs once the end went out after every write (or failed). */
  end (done?: () => void): void
  destroy (): void
  /** Close with a reset, as a server that leaves input unread does (else: destroy()). */
  resetAndDestroy? (): void
  pause (): void
  resume (): void
  readonly writableLength: number
}

/** What a connection needs from the rest of the front. */
export interface ConnEnv {
  readonly config: Config
  readonly log: Logger
  readonly input: InputLog
  readonly replicas: readonly Replica[]
  readonly counters: FrontCounters
  readonly primary: Replica
  /** Whether some backup is in service (the commit rule applies) or not (on_backup_loss). */
  readonly protected: boolean
  /**
   * What each of a connection's buffers (input in flight, output held, a backup's output
   * ahead) may hold now: max_lag, or less while the front's memory budget is tight.
   */
  readonly lagCap: number
  /** Room for `perBuffer` more bytes in each of a connection's buffers (memory budget). */
  grant (perBuffer: number): boolean
  /** A switchover holds every client unread; it resumes them itself. */
  readonly holding: boolean
  /** A backup's output differs from the primary's: it leaves service. */
  diverged (r: Replica, conn: number, offset: number, primary: Buffer, backup: Buffer,
    what: string): void
  /** The connection is finished everywhere: drop it. */
  forget (c: Conn): void
  /** Seconds each release waited for the commit rule (metrics). */
  readonly onCommitWait?: (seconds: number) => void
}

/** The connection as one replica sees it. */
interface Side {
  /** DATA bytes and newest seq of this connection the replica acknowledged. */
  acked: number
  ackSeq: number
  /** Its app socket is still open (closed: by the server, or after the client's end). */
  open: boolean
  /** The front paused reading its output for this connection. */
  paused: boolean
  /** Offset at which its output ended (null: not yet). */
  eofAt: number | null
  /** The end is genuine: the server answered a probe after it (not a dying process's FIN). */
  eofOk: boolean
  /** The end was a reset (the server closed with input unread), not a FIN. */
  reset: boolean
}

const NONE = Buffer.alloc(0)

/** A connection starts with room for one socket read per buffer (see `allowance`). */
export const MIN_ALLOWANCE = 64 * 1024

export class Conn {
  readonly stream: OutputStream
  /** DATA bytes logged: minus a replica's `acked`, the input in flight to it. */
  logged = 0
  /** seq of this connection's newest entry. */
  lastSeq = 0
  inputPaused = false
  /** The client is gone (CLOSE logged): output is compared but no longer written. */
  gone = false
  /** The client socket wants 'drain' before more writes. */
  blocked = false
  /** The client socket got its end (FIN or reset): nothing more is written to it. */
  ended = false
  /** The client socket is being closed because the primary's server closed altogether. */
  private closing = false
  private readonly sides: Side[]
  /**
   * Slow start: what this connection's buffers may hold grows from one socket read,
   * doubling while it uses it and the front's budget has room (ConnTable.rebalance()), up to
   * its share. A burst of new connections thus cannot take more than the budget before the
   * shares have shrunk to fit them all.
   */
  private allowance = MIN_ALLOWANCE
  /** Framed protocols: this connection's requests, as the servers will see them. */
  private readonly session: Session | null = null
  /** Protocols with replies that legitimately differ: makes every replica's output comparable. */
  private readonly aligner: ReplyAligner | null = null
  /** Replicas joined at a re-seed's cut: the replies to their session's replay, to drop. */
  private replays: ReplaySkips | null = null
  /** Closed at a re-seed's cut: what the client sends now is not taken. */
  private cutOff = false

  constructor (readonly id: number, readonly socket: ClientSocket, private readonly env: ConnEnv) {
    const serving = env.replicas.map((r) => r.serving)
    this.stream = new OutputStream(serving, env.primary.index)
    this.sides = serving.map((open) => ({
      acked: 0, ackSeq: 0, open, paused: false, eofAt: null, eofOk: false, reset: false,
    }))
    const protocol = protocolFor(env.config.protocol)
    if (!protocol.serial) return
    const session = this.session = protocol.session()
    if (!protocol.uncompared) return
    const at = (i: number): Replica | undefined => env.replicas[i]
    this.aligner = new ReplyAligner(session, serving, env.primary.index, {
      emit: (i, chunk) => { const r = at(i); if (r) this.canonical(r, chunk) },
      ended: (i) => { const r = at(i); if (r?.serving) this.endCanonical(r) },
      raw: (i, why, reply, error) => this.unaligned(i, why, reply, error),
      replaced: () => { env.counters.uncompared_replies++ },
    })
  }

  // ---- client events ----------------------------------------------------------------------

  onData (data: Buffer): void {
    if (this.cutOff) return
    this.env.counters.bytes_in += data.length
    if (this.session && this.session.fallback === null) this.frame(this.session, data)
    this.append('DATA', data)
    this.logged += data.length
    if (this.over(this.inflight())) this.pauseInput()
  }

  /**
   * The client half-closed, or reset: a reset seen after unread input shows as an end too.
   * An empty write tells them apart: it fails only on a reset socket ('close' follows), so
   * a client that is gone is not mistaken for one that still waits for its replies.
   */
  onEnd (): void {
    if (this.cutOff) return // its CLOSE is logged already
    this.append('EOF')
    if (!this.ended && !this.gone) this.socket.write(NONE)
  }

  onDrain (): void {
    this.blocked = false
    this.advance()
  }

  onClose (): void {
    if (this.cutOff) return // its CLOSE is logged already
    this.gone = true
    this.append('CLOSE')
    this.env.log.debug('connection_closed', { conn: this.id })
    this.maybeForget()
  }

  append (type: EntryType, data?: Buffer): void {
    const entry = this.env.input.append(type, this.id, data)
    this.env.counters.log_entries++
    this.lastSeq = entry.seq
    for (const r of this.env.replicas) r.transport?.apply(entry)
  }

  // ---- replica events ---------------------------------------------------------------------

  onAck (r: Replica, e: Entry): void {
    const side = this.side(r)
    side.ackSeq = Math.max(side.ackSeq, e.seq)
    if (e.data) {
      side.acked += e.data.length
      this.resumeIfDrained()
    }
    this.release()
  }

  /** The replica's app socket for this connection is closed. */
  onClosed (r: Replica): void {
    this.side(r).open = false
    // The primary's server closed the connection altogether: the client may be closed now.
    if (r === this.env.primary) this.advance()
    this.maybeForget()
  }

  onOutput (r: Replica, data: Buffer): void {
    if (!r.serving || !this.stream.isLive(r.index)) return // dropped here (a failed splice)
    if (this.replays) {
      data = this.replays.take(r.index, data)
      if (!this.replays.pending) this.replays = null // the usual case costs nothing after
      if (data.length === 0 || !r.serving) return
    }
    if (this.aligner) this.aligner.output(r.index, data)
    else this.canonical(r, data)
  }

  // r's output as compared and released: raw, or made comparable by the aligner.
  private canonical (r: Replica, data: Buffer): void {
    if (!r.serving || !this.stream.isLive(r.index)) return
    const isPrimary = r === this.env.primary
    const bytes = isPrimary ? data : this.withinPrimaryEnd(r, data)
    if (bytes === null) return
    // ack mode: these bytes may depend on every input of this connection logged so far.
    const dep = isPrimary ? this.lastSeq : 0
    this.mismatches(this.stream.push(r.index, bytes, dep, performance.now()))
    this.checkEnds()
    this.advance()
  }

  /**
   * r's output ended (err: with a reset); whether the end is already known to be the
   * server's own. A reset may cut output short at any offset (what the server had not sent
   * yet is discarded), so its offset is not compared; only the bytes are, as far as they go.
   */
  onOutputEnd (r: Replica, err: Error | null): boolean {
    const side = this.side(r)
    side.reset = err !== null
    if (err) r.log.debug('app_socket_error', { conn: this.id, error: err.message })
    if (r.transport?.endsConfirmed) side.eofOk = true
    // Output the aligner holds for the primary's replies comes first: the end is placed
    // after it (endCanonical, called back); whether it is genuine is probed meanwhile.
    if (this.aligner && !this.aligner.end(r.index)) return side.eofOk
    return this.endCanonical(r)
  }

  private endCanonical (r: Replica): boolean {
    const side = this.side(r)
    const at = side.eofAt = this.stream.producedBy(r.index)
    // Another replica ended the same way at the same offset: the end is the servers' own.
    const sameEnd = !side.reset &&
      this.env.replicas.some((o) => o !== r && o.serving && this.side(o).eofAt === at)
    if (sameEnd) side.eofOk = true
    this.endsMoved()
    return side.eofOk
  }

  // The client's input as the servers will frame it: a connection whose input cannot be
  // framed is ordered raw from here on (turns.ts); say so once.
  private frame (session: Session, data: Buffer): void {
    session.request(data)
    if (session.fallback === null) return
    this.env.log.warn('protocol_error', { conn: this.id, reason: session.fallback })
  }

  private unaligned (i: number, why: RawReason, reply: number, error: string | null): void {
    const r = this.env.replicas[i]
    if (!r) return
    r.log.warn('replies_unaligned', { conn: this.id, reason: why, reply, error })
    if (why === 'misaligned' && r !== this.env.primary) {
      const at = this.stream.producedBy(i)
      this.env.diverged(r, this.id, at, NONE, NONE, 'replies do not correspond')
    }
  }

  /** A probe after r's end found its server alive: the end is genuine. */
  confirmEnd (r: Replica): void {
    this.side(r).eofOk = true
    this.endsMoved()
  }

  /**
   * r could not open this connection because the front itself ran out (descriptors, buffers,
   * memory, local ports): r takes no part in it any more, and the client is closed, so that
   * every replica sees the same end (the socket's 'close' logs CLOSE).
   */
  connFailed (r: Replica, err: Error): void {
    const code = (err as NodeJS.ErrnoException).code ?? err.message
    r.log.warn('conn_failed', { conn: this.id, code })
    this.dropReplica(r)
    if (!this.gone) this.socket.destroy()
  }

  // ---- role changes -----------------------------------------------------------------------

  /** Replica r left service: it holds nothing back any more. */
  dropReplica (r: Replica): void {
    this.aligner?.drop(r.index)
    this.replays?.drop(r.index)
    this.stream.drop(r.index, performance.now())
    this.side(r).open = false
    this.release()
    this.maybeForget()
  }

  /** Failover: `to` is the primary; splice at the offset the client already has. */
  promote (to: Replica, now: number): void {
    const from = this.stream.primary
    if (from !== to.index) {
      this.mismatches(this.stream.promote(to.index, this.lastSeq, now))
      this.alignTo(from, to, now) // after the stream: held bytes go to the new reference
    }
    this.resumeReplica(to)
  }

  /** Planned switchover from `from` to `to` (in sync, input held). */
  swap (from: Replica, to: Replica, now: number): void {
    if ((this.aligner?.idle ?? true) && this.stream.swap(to.index, now)) {
      this.aligner?.promote(to.index) // the old primary goes on as a backup
    } else {
      // Only output a server sends unasked can get in between; such a connection is spliced
      // as a failover would (the old primary leaves it).
      this.env.log.warn('switchover_splice', { conn: this.id })
      this.mismatches(this.stream.promote(to.index, this.lastSeq, now))
      this.alignTo(from.index, to, now)
    }
    this.resumeReplica(from)
  }

  // The aligner follows a failover; a reply the old primary left half sent that the new one
  // cannot finish the same way cannot be spliced.
  private alignTo (from: number, to: Replica, now: number): void {
    if (!this.aligner) return
    this.aligner.drop(from)
    if (this.aligner.promote(to.index) || this.gone) return
    this.cannotSplice(to, this.stream.producedBy(to.index), { reason: 'reply in progress' }, now)
  }

  // The primary's bytes (or session) for this connection are not what the client was given:
  // this one connection cannot go on.
  private cannotSplice (r: Replica, offset: number, why: Record<string, string>,
    now = performance.now()): void {
    this.env.log.error('splice_failed', { conn: this.id, replica: r.name, offset, ...why })
    this.stream.drop(r.index, now)
    this.gone = true
    this.socket.destroy()
  }

  // ---- a re-seed's cut (input held, every replica in sync) -----------------------------------

  /** Replica r joins: it owes nothing of this connection's past, and takes no part yet. */
  joinSide (r: Replica): void {
    this.sides[r.index] = {
      acked: this.logged,
      ackSeq: this.lastSeq,
      open: false,
      paused: false,
      eofAt: null,
      eofOk: false,
      reset: false,
    }
  }

  /** How this connection can go on on a replica that joins now (see Session.carry). */
  carry (): Carry {
    if (this.gone || this.ended || this.cutOff) return { refused: 'ending' }
    if (this.sides.some((s) => s.eofAt !== null)) return { refused: 'ending' }
    return this.session?.carry?.() ?? { replay: NONE }
  }

  /** ...and it does: r gets a fresh server connection for it (its transport opens it). */
  reattach (r: Replica, replay: Buffer): void {
    this.side(r).open = true
    this.stream.join(r.index)
    this.aligner?.join(r.index)
    if (replay.length === 0) return
    // A replay refused: its session there is not the client's; what it runs may differ.
    this.replays ??= new ReplaySkips(protocolFor(this.env.config.protocol), (i) => {
      const at = this.stream.producedBy(i)
      const bad = this.env.replicas[i]
      const why = 'its session could not be replayed'
      // Promoted before it answered the replay: only this connection is lost, not the service.
      if (bad === this.env.primary) this.cannotSplice(bad, at, { reason: why })
      else if (bad) this.env.diverged(bad, this.id, at, NONE, NONE, why)
    })
    this.replays.add(r.index, replay)
  }

  /**
   * ...or it cannot: the client gets everything released (it all is, in sync), then an end;
   * what it sends after is not taken, and its close ends it everywhere.
   */
  closeAtCut (): void {
    this.cutOff = true
    this.ended = true
    this.commit()
    for (const buf of this.stream.take()) {
      this.env.counters.bytes_out += buf.length
      this.socket.write(buf)
    }
    this.socket.end(() => this.socket.destroy())
    // A client that never reads them is not waited for beyond linger.
    setTimeout(() => this.socket.destroy(), this.env.config.timeouts.linger).unref()
    // Its end reaches every server now, at this point of the order (a BLPOP it left waiting
    // must not take what a later client pushes), not when the client gets round to closing.
    this.gone = true
    this.append('CLOSE')
    this.maybeForget()
  }

  /**
   * Every serving replica produced the same bytes and ended (or not) at the same offset; or
   * all ended, one with a reset, having produced the same bytes as far as each went.
   */
  inSync (): boolean {
    if (!this.stream.inSync || !(this.aligner?.idle ?? true)) return false
    if (this.replays?.pending === true) return false
    const ends = this.env.replicas
      .filter((r) => r.serving && this.stream.isLive(r.index)).map((r) => this.side(r))
    if (ends.every((e) => e.eofAt !== null) && ends.some((e) => e.reset)) return true
    return ends.every((e) => e.eofAt === ends[0]?.eofAt)
  }

  /** Input of this connection not yet acknowledged by the replica (status: lag_bytes). */
  lagOf (r: Replica): number {
    return this.logged - this.side(r).acked
  }

  /** What each of this connection's buffers may hold now. */
  get cap (): number {
    return Math.min(this.env.lagCap, this.allowance)
  }

  /** What this connection holds or may hold without asking: the larger of the two. */
  reserved (kinds: number): number {
    return Math.max(this.usage(), this.cap * kinds)
  }

  /** Held back now (its input, or a replica's output on it, is paused). */
  get heldBack (): boolean {
    return this.inputPaused || this.sides.some((s) => s.paused)
  }

  /** Double the allowance if the budget has room for it; whether it grew. */
  private grow (): boolean {
    const next = Math.min(2 * this.allowance, this.env.lagCap)
    if (next <= this.allowance || !this.env.grant(next - this.allowance)) return false
    this.allowance = next
    return true
  }

  // Grow while `used` is over the cap and the budget allows; whether it is still over.
  private over (used: number): boolean {
    while (used > this.cap) if (!this.grow()) return true
    return false
  }

  /** A rebalance made room: let a connection held back grow, and go on if it may. */
  retry (): void {
    this.resumeIfDrained()
    this.advance()
  }

  /** Bytes this connection makes the front hold: input, output, ahead bytes, socket buffer. */
  usage (): number {
    let ahead = 0
    for (const r of this.env.replicas) {
      if (r !== this.env.primary) ahead += this.aheadOf(r)
    }
    // Released bytes still kept for a backup's comparison may also sit in the client
    // socket's buffer (the same Buffer objects): count them once.
    const s = this.stream
    const inSocket = Math.max(0, this.socket.writableLength - Math.max(0, s.written - s.base))
    return this.inflight() + s.held + ahead + inSocket
  }

  /** Released output not yet written to the client socket. */
  get undrained (): boolean {
    const s = this.stream
    return !this.gone && (s.committed > s.written || this.socket.writableLength > 0)
  }

  // ---- output commit ----------------------------------------------------------------------

  /** Apply the commit rule, write what it releases, apply backpressure, end when done. */
  advance (): void {
    const s = this.stream
    const waiting = this.env.onCommitWait && s.uncommittedSince
    const before = s.committed
    this.commit()
    if (waiting !== undefined && s.committed > before) {
      this.env.onCommitWait?.((performance.now() - waiting) / 1000)
    }
    if (this.gone || this.ended) {
      s.take()
    } else if (!this.blocked && s.committed > s.written) {
      for (const buf of s.take()) {
        this.env.counters.bytes_out += buf.length
        this.blocked = !this.socket.write(buf)
      }
    } else {
      s.trim()
    }
    this.pressure()
    const p = this.side(this.env.primary)
    if (!this.gone && p.eofAt !== null && p.eofOk && s.written === p.eofAt) this.endClient(p)
  }

  /**
   * The client has every byte the primary produced before its end: its socket ends as the
   * primary's did. A reset once those bytes are in the kernel (as a server that closes with
   * input unread); else a FIN, and once the primary's server has closed the connection
   * altogether, the socket is closed after it, so that the client's later writes fail as
   * they would against the server (its kernel answers them with a reset).
   */
  private endClient (p: Side): void {
    if (p.reset) {
      if (this.ended) return
      this.ended = true
      this.socket.write(NONE, () => {
        if (this.socket.resetAndDestroy) this.socket.resetAndDestroy()
        else this.socket.destroy()
      })
      return
    }
    if (!this.ended) {
      this.ended = true
      this.socket.end()
    }
    if (!p.open && !this.closing) {
      this.closing = true
      this.socket.end(() => this.socket.destroy())
    }
  }

  /** Resume reading the client if its input in flight fell to half of its cap. */
  resumeIfDrained (): void {
    // Resume at half the cap (growing the allowance for it if the budget has room).
    if (!this.inputPaused || this.over(2 * this.inflight()) || this.outputBound) return
    this.inputPaused = false
    if (!this.env.holding) this.socket.resume()
  }

  /**
   * A paused socket is not read, so its reset is not seen. An empty write sends nothing but
   * fails on a reset socket ('close' follows): the connection ends now, not when the
   * backpressure does, and nothing more is read from it.
   */
  probeWhilePaused (): void {
    if (this.inputPaused && !this.gone && !this.ended) this.socket.write(NONE)
  }

  private commit (): void {
    const { output_commit: mode, on_backup_loss: onLoss } = this.env.config
    const s = this.stream
    if (!this.env.protected) {
      if (onLoss === 'continue') s.commitTo(s.end)
    } else if (mode === 'none') {
      s.commitTo(s.end)
    } else if (mode === 'ack') {
      let seq = Infinity
      for (const r of this.env.replicas) {
        if (r.role === 'backup' && r.transport) seq = Math.min(seq, this.side(r).ackSeq)
      }
      s.commitAcked(seq)
    } else {
      s.commitTo(s.matchedByBackups())
    }
  }

  // Pause a replica's output on this connection while its unconfirmed bytes exceed the cap.
  private pressure (): void {
    for (const r of this.env.replicas) {
      if (!r.transport) continue
      const side = this.side(r)
      const owed = r === this.env.primary ? this.stream.held : this.aheadOf(r)
      const over = this.over(owed)
      if (over && !side.paused) {
        side.paused = true
        this.stream.suspend(r.index, true, performance.now())
        r.transport.pause(this.id)
        if (this.outputBound) this.pauseInput()
      } else if (!over && side.paused) {
        this.resumeReplica(r)
        if (r === this.env.primary) this.resumeIfDrained()
      }
    }
  }

  // Serial protocols: a replica reads a turn to its end even when its client does not read
  // (the order waits for no one), so a client whose output is over its cap is not read from
  // either: it sends no new turns until it has read.
  private get outputBound (): boolean {
    return this.session !== null && this.side(this.env.primary).paused
  }

  private pauseInput (): void {
    if (this.inputPaused) return
    this.inputPaused = true
    this.socket.pause()
  }

  // A backup's output beyond the primary's: in the stream, or held by the aligner.
  private aheadOf (r: Replica): number {
    return this.stream.aheadOf(r.index) + (this.aligner?.held(r.index) ?? 0)
  }

  private resumeReplica (r: Replica): void {
    const side = this.side(r)
    if (!side.paused) return
    side.paused = false
    this.stream.suspend(r.index, false, performance.now())
    r.transport?.resume(this.id)
  }

  // ---- comparison -------------------------------------------------------------------------

  // Ends of output: compared, confirmed by each other, and acted upon once confirmed (a
  // dying server's sockets end too: until then its replica still owes what others produced).
  private endsMoved (): void {
    this.checkEnds()
    const now = performance.now()
    for (const r of this.env.replicas) {
      const side = this.side(r)
      if (side.eofAt !== null && side.eofOk) this.stream.finish(r.index, side.reset, now)
    }
    const p = this.side(this.env.primary)
    if (p.reset && p.eofOk) {
      // The primary's output was cut short: what a backup produced beyond it is not compared.
      for (const r of this.env.replicas) {
        if (r !== this.env.primary && this.stream.isLive(r.index)) this.stream.cutAhead(r.index)
      }
    }
    this.advance()
  }

  // A replica whose output ended cleanly (FIN) where the primary's goes on, or that goes on
  // where the primary's ended cleanly, has diverged. A reset proves nothing about where
  // output ends: it discards what the server had not sent yet (see onOutputEnd).
  // Once the client is gone the front itself ends the app sockets (linger), at whatever
  // offset each server had reached, so ends prove nothing then; bytes are still compared.
  private checkEnds (): void {
    if (this.gone) return
    const p = this.side(this.env.primary)
    for (const r of this.env.replicas) {
      if (r.role !== 'backup') continue
      const b = this.side(r)
      if (b.eofAt !== null && p.eofAt !== null && b.eofAt === p.eofAt) {
        // Both ended at the same offset: each confirms the other.
        p.eofOk = b.eofOk = true
      } else if (b.eofAt !== null && b.eofOk && !b.reset &&
        (this.stream.end > b.eofAt || (p.eofAt !== null && p.eofOk && !p.reset))) {
        const what = 'output ended at a different offset'
        this.env.diverged(r, this.id, b.eofAt, NONE, NONE, what)
      }
    }
  }

  // A backup's bytes as far as the primary's output goes once it has ended for sure: beyond
  // a clean end they are a divergence (null), beyond a reset they are dropped.
  private withinPrimaryEnd (r: Replica, data: Buffer): Buffer | null {
    const p = this.side(this.env.primary)
    if (this.gone || p.eofAt === null || !p.eofOk) return data
    const room = p.eofAt - this.stream.producedBy(r.index)
    if (data.length <= room) return data
    if (p.reset) return data.subarray(0, Math.max(0, room))
    const what = 'output after the primary closed'
    this.env.diverged(r, this.id, p.eofAt, NONE, data.subarray(0, 16), what)
    return null
  }

  private mismatches (found: Mismatch[]): void {
    for (const m of found) {
      const r = this.env.replicas[m.replica]
      if (!r) continue
      if (r === this.env.primary) {
        // The new primary's bytes differ from what the client already has: cannot splice.
        this.cannotSplice(r, m.offset, {
          released: m.expected.toString('hex'),
          replica_bytes: m.actual.toString('hex'),
        })
      } else {
        this.env.diverged(r, this.id, m.offset, m.expected, m.actual, 'bytes differ')
      }
    }
  }

  // ---- bookkeeping ------------------------------------------------------------------------

  // Input not yet acknowledged by every serving replica.
  private inflight (): number {
    let min = this.logged
    for (const r of this.env.replicas) if (r.transport) min = Math.min(min, this.side(r).acked)
    return this.logged - min
  }

  // Entries every serving replica acknowledged are dropped from the log.
  private release (): void {
    let min = this.lastSeq
    for (const r of this.env.replicas) if (r.transport) min = Math.min(min, this.side(r).ackSeq)
    this.env.input.release(this.id, min)
  }

  private maybeForget (): void {
    if (!this.gone || this.env.replicas.some((r) => r.serving && this.side(r).open)) return
    this.env.forget(this)
  }

  private side (r: Replica): Side {
    const s = this.sides[r.index]
    if (!s) throw new RangeError(`no replica ${r.index} on connection ${this.id}`)
    return s
  }
}
