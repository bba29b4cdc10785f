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
import type { Replica } from './replica.js'

/** The part of a client socket a connection uses (a net.Socket in production). */
export interface ClientSocket {
  write (data: Buffer): boolean
  end (): void
  destroy (): void
  pause (): void
  resume (): void
  readonly writableLength: number
}

/** Running totals since start, for metrics. */
export interface FrontCounters {
  bytes_in: number
  bytes_out: number
  log_entries: number
  connections_total: number
  connections_rejected: number
  failovers: number
  switchovers: number
  divergences: number
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
  /** Its app socket is still open. */
  open: boolean
  /** The front paused reading its output for this connection. */
  paused: boolean
  /** Offset at which its output ended (null: not yet). */
  eofAt: number | null
  /** The end is genuine: the server answered a probe after it (not a dying process's FIN). */
  eofOk: boolean
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
  ended = false
  private readonly sides: Side[]
  /**
   * Slow start: what this connection's buffers may hold grows from one socket read,
   * doubling while it uses it and the front's budget has room (ConnTable.rebalance()), up to
   * its share. A burst of new connections thus cannot take more than the budget before the
   * shares have shrunk to fit them all.
   */
  private allowance = MIN_ALLOWANCE

  constructor (readonly id: number, readonly socket: ClientSocket, private readonly env: ConnEnv) {
    const serving = env.replicas.map((r) => r.serving)
    this.stream = new OutputStream(serving, env.primary.index)
    this.sides = serving.map((open) => ({
      acked: 0, ackSeq: 0, open, paused: false, eofAt: null, eofOk: false,
    }))
  }

  // ---- client events ----------------------------------------------------------------------

  onData (data: Buffer): void {
    this.env.counters.bytes_in += data.length
    this.append('DATA', data)
    this.logged += data.length
    if (!this.inputPaused && this.over(this.inflight())) {
      this.inputPaused = true
      this.socket.pause()
    }
  }

  /**
   * The client half-closed, or reset: a reset seen after unread input shows as an end too.
   * An empty write tells them apart: it fails only on a reset socket ('close' follows), so
   * a client that is gone is not mistaken for one that still waits for its replies.
   */
  onEnd (): void {
    this.append('EOF')
    if (!this.ended && !this.gone) this.socket.write(NONE)
  }

  onDrain (): void {
    this.blocked = false
    this.advance()
  }

  onClose (): void {
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
    side.ackSeq = e.seq
    if (e.data) {
      side.acked += e.data.length
      this.resumeIfDrained()
    }
    this.release()
  }

  /** The replica's app socket for this connection is closed. */
  onClosed (r: Replica): void {
    this.side(r).open = false
    this.maybeForget()
  }

  onOutput (r: Replica, data: Buffer): void {
    if (!r.serving || !this.stream.isLive(r.index)) return // dropped here (a failed splice)
    const p = this.env.primary
    const isPrimary = r === p
    const pEnd = this.side(p)
    if (!isPrimary && !this.gone && pEnd.eofAt !== null && pEnd.eofOk &&
      this.stream.producedBy(r.index) + data.length > pEnd.eofAt) {
      const what = 'output after the primary closed'
      return this.env.diverged(r, this.id, pEnd.eofAt, NONE, data.subarray(0, 16), what)
    }
    // ack mode: these bytes may depend on every input of this connection logged so far.
    const dep = isPrimary ? this.lastSeq : 0
    this.mismatches(this.stream.push(r.index, data, dep, performance.now()))
    this.checkEnds()
    this.advance()
  }

  /** Where r's output ended; whether the end is already known to be the server's own. */
  onOutputEnd (r: Replica, err: Error | null): boolean {
    const side = this.side(r)
    const at = side.eofAt = this.stream.producedBy(r.index)
    if (err) r.log.debug('app_socket_error', { conn: this.id, error: err.message })
    this.checkEnds()
    const sameEnd = !err &&
      this.env.replicas.some((o) => o !== r && o.serving && this.side(o).eofAt === at)
    if (side.eofOk || r.transport?.endsConfirmed || sameEnd) {
      // Another replica ended at the same offset: the end is the servers' own, no probe needed.
      side.eofOk = true
      this.advance()
      return true
    }
    this.checkEnds()
    this.advance()
    return false
  }

  /** A probe after r's end found its server alive: the end is genuine. */
  confirmEnd (r: Replica): void {
    this.side(r).eofOk = true
    this.checkEnds()
    this.advance()
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
    this.stream.drop(r.index, performance.now())
    this.side(r).open = false
    this.release()
    this.maybeForget()
  }

  /** Failover: `to` is the primary; splice at the offset the client already has. */
  promote (to: Replica, now: number): void {
    if (this.stream.primary !== to.index) {
      this.mismatches(this.stream.promote(to.index, this.lastSeq, now))
    }
    this.resumeReplica(to)
  }

  /** Planned switchover from `from` to `to` (in sync, input held). */
  swap (from: Replica, to: Replica, now: number): void {
    if (!this.stream.swap(to.index, now)) {
      // Only output a server sends unasked can get in between; such a connection is spliced
      // as a failover would (the old primary leaves it).
      this.env.log.warn('switchover_splice', { conn: this.id })
      this.mismatches(this.stream.promote(to.index, this.lastSeq, now))
    }
    this.resumeReplica(from)
  }

  /** Every serving replica produced the same bytes and ended (or not) at the same offset. */
  inSync (): boolean {
    if (!this.stream.inSync) return false
    const ends = this.env.replicas.filter((r) => r.serving).map((r) => this.side(r).eofAt)
    return ends.every((e) => e === ends[0])
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
      if (r !== this.env.primary) ahead += this.stream.aheadOf(r.index)
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
    if (!this.ended && !this.gone && p.eofAt !== null && p.eofOk && s.written === p.eofAt) {
      this.ended = true
      this.socket.end()
    }
  }

  /** Resume reading the client if its input in flight fell to half of its cap. */
  resumeIfDrained (): void {
    // Resume at half the cap (growing the allowance for it if the budget has room).
    if (!this.inputPaused || this.over(2 * this.inflight())) return
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
      const owed = r === this.env.primary ? this.stream.held : this.stream.aheadOf(r.index)
      const over = this.over(owed)
      if (over && !side.paused) {
        side.paused = true
        this.stream.suspend(r.index, true, performance.now())
        r.transport.pause(this.id)
      } else if (!over && side.paused) {
        this.resumeReplica(r)
      }
    }
  }

  private resumeReplica (r: Replica): void {
    const side = this.side(r)
    if (!side.paused) return
    side.paused = false
    this.stream.suspend(r.index, false, performance.now())
    r.transport?.resume(this.id)
  }

  // ---- comparison -------------------------------------------------------------------------

  // A replica whose output ended where the primary's goes on (or the reverse) has diverged.
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
      } else if (b.eofAt !== null && b.eofOk &&
        (this.stream.end > b.eofAt || (p.eofAt !== null && p.eofOk))) {
        const what = 'output ended at a different offset'
        this.env.diverged(r, this.id, b.eofAt, NONE, NONE, what)
      }
    }
  }

  private mismatches (found: Mismatch[]): void {
    for (const m of found) {
      const r = this.env.replicas[m.replica]
      if (!r) continue
      if (r === this.env.primary) {
        // The new primary's bytes differ from what the client already has: cannot splice.
        this.env.log.error('splice_failed', {
          conn: this.id,
          replica: r.name,
          offset: m.offset,
          released: m.expected.toString('hex'),
          replica_bytes: m.actual.toString('hex'),
        })
        this.stream.drop(r.index, performance.now())
        this.gone = true
        this.socket.destroy()
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
