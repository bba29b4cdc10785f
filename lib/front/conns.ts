// The table of client connections: routes each replica's transport events to the connection
// they concern, and applies what concerns them all (a replica leaving, a promotion, a swap,
// stall detection, commit after acks) to every one of them.

import type { Entry } from './log.js'
import { aliveAfterEnd } from '../health.js'
import type { Replica } from './replica.js'
import { Conn, MIN_ALLOWANCE, type ClientSocket, type ConnEnv } from './conn.js'

export class ConnTable {
  private readonly conns = new Map<number, Conn>()
  private nextId = 1
  /** Connections whose commit rule may have moved (acks came in): advanced once per turn. */
  private readonly dirty = new Set<Conn>()
  private flushScheduled = false
  /** The cap the last rebalance() applied. */
  private appliedCap = 0
  /** The budget not yet used or granted (set by rebalance()). */
  private room = 0

  constructor (private readonly env: ConnEnv) {
    this.room = env.config.limits.max_memory
  }

  get size (): number {
    return this.conns.size
  }

  /** A new client connection (its OPEN is the caller's to log). */
  open (socket: ClientSocket): Conn {
    const c = new Conn(this.nextId++, socket, this.env)
    this.conns.set(c.id, c)
    return c
  }

  /** Whether connection `id` is still open somewhere (client or servers). */
  has (id: number): boolean {
    return this.conns.has(id)
  }

  forget (c: Conn): void {
    this.conns.delete(c.id)
    this.dirty.delete(c)
    this.env.input.forget(c.id)
  }

  // ---- transport events -------------------------------------------------------------------

  onAck (r: Replica, e: Entry): void {
    const c = this.conns.get(e.conn)
    if (!c) return
    c.onAck(r, e)
    if (r.role === 'backup' && this.env.config.output_commit === 'ack') this.markDirty(c)
  }

  onOutput (r: Replica, conn: number, data: Buffer): void {
    this.conns.get(conn)?.onOutput(r, data)
  }

  onOutputEnd (r: Replica, conn: number, err: Error | null): void {
    const c = this.conns.get(conn)
    if (!c || !r.serving || c.gone) return
    if (c.onOutputEnd(r, err)) return
    // A dying server's sockets end too: believe an end only once the server still answers.
    void aliveAfterEnd(r.health, () => r.serving).then((ok) => {
      if (ok && r.serving) c.confirmEnd(r)
    })
  }

  onClosed (r: Replica, conn: number): void {
    this.conns.get(conn)?.onClosed(r)
  }

  /** r could not open `conn`: the front is out of its own resources (not r's fault). */
  onConnFailed (r: Replica, conn: number, err: Error): void {
    this.conns.get(conn)?.connFailed(r, err)
  }

  // ---- all connections --------------------------------------------------------------------

  /** Replica r left service. */
  dropReplica (r: Replica): void {
    for (const c of this.conns.values()) c.dropReplica(r)
  }

  /** Failover to `to`: every connection is spliced at what its client already has. */
  promote (to: Replica, now: number): void {
    for (const c of [...this.conns.values()]) c.promote(to, now)
  }

  /** Planned switchover from `from` to `to`. */
  swap (from: Replica, to: Replica, now: number): void {
    for (const c of this.conns.values()) c.swap(from, to, now)
  }

  /**
   * Replica r joins at a re-seed's cut (input held, every replica in sync). Each open
   * connection goes on on it (`open` gives r a fresh server connection, with the requests
   * that recreate its session), unless the policy or its session rule that out: those are
   * returned, to be closed once r serves (closeAtCut).
   */
  join (r: Replica, policy: 'reattach' | 'close',
    open: (conn: number, replay: Buffer) => void): { closing: Conn[], reattached: number } {
    const out: Conn[] = []
    let reattached = 0
    for (const c of this.conns.values()) {
      c.joinSide(r)
      const carry = c.carry()
      if ('refused' in carry) {
        if (carry.refused === 'ending') continue // on its way out: nothing to carry
        this.env.log.info('reseed_conn_closed', { conn: c.id, reason: carry.refused })
        out.push(c)
      } else if (policy === 'close') {
        out.push(c)
      } else {
        open(c.id, carry.replay)
        c.reattach(r, carry.replay)
        reattached++
      }
    }
    return { closing: out, reattached }
  }

  inSync (): boolean {
    for (const c of this.conns.values()) if (!c.inSync()) return false
    return true
  }

  /** The front was not running for `ms`: nobody's debts grew older meanwhile. */
  discount (ms: number): void {
    for (const c of this.conns.values()) c.stream.discount(ms)
  }

  /** Indices of replicas that owe output another produced more than `stallMs` ago. */
  stalled (now: number, stallMs: number): Set<number> {
    const out = new Set<number>()
    for (const c of this.conns.values()) for (const r of c.stream.stalled(now, stallMs)) out.add(r)
    return out
  }

  // Everything that may have moved after a replica left or a primary changed: commit,
  // backpressure on replicas (a paused primary may be free now) and on clients.
  afterProgress (): void {
    for (const c of [...this.conns.values()]) {
      c.resumeIfDrained()
      c.advance()
    }
  }

  /** Some released output has not reached a client socket's kernel buffer yet. */
  undrained (): boolean {
    for (const c of this.conns.values()) if (c.undrained) return true
    return false
  }

  /**
   * What each buffer of a connection (input in flight, output held, each backup's output
   * ahead) may hold now: an equal share of limits.max_memory for every open connection,
   * at most max_lag, at least one socket read. Shares are set aside by connection, not by
   * use, so that a connection that starts sending finds its room free: the budget holds
   * whatever the others do, and only connections that fill their share are held back.
   */
  lagCap (): number {
    const { max_memory: budget, max_lag: maxLag } = this.env.config.limits
    const share = Math.floor(budget / (this.kinds() * Math.max(1, this.conns.size)))
    return Math.min(maxLag, Math.max(MIN_ALLOWANCE, share))
  }

  /**
   * Every 100 ms: after the share moved (connections came or went) hold back or let go at
   * once; count what the budget has left; let connections held back grow into it.
   */
  rebalance (): void {
    const cap = this.lagCap()
    const conns = [...this.conns.values()]
    if (cap !== this.appliedCap) {
      this.appliedCap = cap
      for (const c of conns) {
        c.resumeIfDrained()
        c.advance()
      }
    }
    // What is used, or granted and not used yet, is not free.
    const kinds = this.kinds()
    let reserved = 0
    for (const c of conns) reserved += c.reserved(kinds)
    this.room = this.env.config.limits.max_memory - reserved
    for (const c of conns) if (c.heldBack) c.retry()
  }

  /**
   * A connection asks for `perBuffer` more bytes in each of its buffers: granted while the
   * budget left at the last rebalance covers it.
   */
  grant (perBuffer: number): boolean {
    const more = perBuffer * this.kinds()
    if (more > this.room) return false
    this.room -= more
    return true
  }

  // A connection's buffers: input in flight, output released but still in the client
  // socket's own buffer (one batch at most), the primary's held output, each backup's
  // output ahead.
  private kinds (): number {
    let kinds = 2
    for (const r of this.env.replicas) if (r.serving) kinds++
    return kinds
  }

  /** Bytes the connections make the front hold, all together. */
  usage (): number {
    let n = 0
    for (const c of this.conns.values()) n += c.usage()
    return n
  }

  /** Read each client paused by backpressure once, so that a reset of it is noticed. */
  probePaused (): void {
    for (const c of this.conns.values()) c.probeWhilePaused()
  }

  destroyAll (): void {
    for (const c of this.conns.values()) c.socket.destroy()
  }

  /** A switchover holds input: stop reading every client. */
  pauseAll (): void {
    for (const c of this.conns.values()) c.socket.pause()
  }

  /** ... and resumes those that backpressure does not hold. */
  resumeAll (): void {
    for (const c of this.conns.values()) if (!c.inputPaused) c.socket.resume()
  }

  /** Bytes of output held, and per replica the client input it has not acknowledged. */
  totals (): { held: number, lag: Map<Replica, number> } {
    let held = 0
    const lag = new Map<Replica, number>()
    for (const c of this.conns.values()) {
      held += c.stream.held
      for (const r of this.env.replicas) if (r.transport) lag.set(r, (lag.get(r) ?? 0) + c.lagOf(r))
    }
    return { held, lag }
  }

  // Acks arrive one entry at a time: advance each touched connection once per turn.
  private markDirty (c: Conn): void {
    this.dirty.add(c)
    if (this.flushScheduled) return
    this.flushScheduled = true
    setImmediate(() => {
      this.flushScheduled = false
      const cs = [...this.dirty]
      this.dirty.clear()
      for (const c of cs) c.advance()
    })
  }
}
