// Who serves: the primary, the backups, the stale and the down; failover, planned
// switchover, and every test-and-set on the arbiter that moves them.
//
//   replica fails ─▶ fail() ─┬─ a backup ──▶ retire(): stale (missed input) or down
//                            └─ the primary ─▶ failover(): CAS epoch+1 naming a backup
//                                        ├─ won  ─▶ promote it, splice every connection
//                                        └─ lost ─▶ stopServing()  (split brain averted)
//
// No sockets here: replicas are reached through their transports (a factory the front
// passes in), connections through the ConnTable, the arbiter through its interface, so the
// decisions can be driven in unit tests with fakes.

import type { EventEmitter } from 'node:events'
import { performance } from 'node:perf_hooks'
import { STOPPED, type Arbiter, type ArbiterState } from '../arbiter/index.js'
import type { Config } from '../config/index.js'
import { FtproxyError } from '../errors.js'
import type { Logger } from '../logger.js'
import type { ConnTable } from './conns.js'
import { TURN_WAIT_BOUNDS_MS, type FrontCounters } from './counters.js'
import type { Lifecycle } from './lifecycle.js'
import type { InputLog } from './log.js'
import type { Replica, Role, TransportFactory } from './replica.js'
import { JoinedTransport } from '../replica/joined.js'
import { compare, sameRecord } from '../incarnation.js'
import { cut, type CutInfo, type CutOptions } from './cut.js'
import { noteDivergence } from './reseed.js'
import type { Transport } from '../replica/transport.js'
import { PAUSE_MS, pollUntil } from '../util/timer.js'

export interface FailoverInfo {
  from: string
  to: string
  epoch: number
  duration_ms: number
  reason: string
}

export interface FrontEvents {
  listening: [address: { host: string, port: number }]
  failover: [info: FailoverInfo]
  /** The front can no longer serve (arbiter lost, no replica left); it closed its listener. */
  stopped: [reason: string]
  /** A role changed (a replica left or joined service, a failover, a switchover). */
  roles: []
}

/** What the roles need the rest of the front to do. */
export interface RoleHooks {
  /** A switchover holds every client's input (new clients wait) ... */
  hold (): void
  /** ... and lets it go. */
  release (): void
  /** Serving stopped: close the listener, drop every client, stop checks and transports. */
  stop (): void
}

export interface RolesOptions {
  replicas: readonly Replica[]
  arbiter: Arbiter
  conns: ConnTable
  input: InputLog
  lifecycle: Lifecycle
  log: Logger
  events: EventEmitter<FrontEvents>
  counters: FrontCounters
  config: () => Config
  transport: TransportFactory
  hooks: RoleHooks
  /** The server process a replica is now (lib/incarnation.ts); null: cannot be told. */
  incarnation: (r: Replica) => Promise<string | null>
}

const ms = (from: number): number => Math.round((performance.now() - from) * 100) / 100

const notInSync = (msg: string): FtproxyError => new FtproxyError('ERR_FTPROXY_NOT_IN_SYNC', msg)

export class Roles {
  primary!: Replica
  /** The arbiter's record as last written or read. */
  state!: ArbiterState
  /** Some backup is in service (null before the first report). */
  isProtected: boolean | null = null
  protectedSince = new Date()
  lastFailover: FailoverInfo | null = null
  /**
   * The switchover in flight, if any. It holds input from its start to its end, also while a
   * failover that came in meanwhile runs (the lifecycle is `failing_over` then).
   */
  private switchingTo: Replica | null = null
  /** A re-seed's cut holds input too. */
  cutting = false
  /** The replica whose cut is being recorded: no longer stale in that record. */
  joining: Replica | null = null
  /** The primary the arbiter is (being) told about: moves before a failover's test-and-set. */
  private arbiterPrimary = ''
  private arbiterQueue: Promise<unknown> = Promise.resolve()
  /** When the last stall check ran (null: none yet; set when the checks start). */
  lastStallCheck: number | null = null
  /** Per replica, the server process the state vouches for (ArbiterState.incarnations). */
  incarnations: Record<string, string> = {}
  /**
   * Agent replicas whose handshake named another server process before the start decided
   * (Front.agentsReported); null once it has: later ones fail like any other.
   */
  restartedAtStart: Set<string> | null = new Set()
  /** Replicas that failed before serving began: failed once it has. */
  private readonly failedAtStart = new Map<Replica, string>()
  /** The last test-and-set failed with an error, not a lost race: its cause. */
  private arbiterFault: string | null = null
  private readonly o: RolesOptions

  constructor (opts: RolesOptions) {
    this.o = opts
  }

  get replicas (): readonly Replica[] {
    return this.o.replicas
  }

  /** A switchover holds every client's input: none is read, new clients wait. */
  get holding (): boolean {
    return this.switchingTo !== null || this.cutting
  }

  // ---- startup ----------------------------------------------------------------------------

  /** Roles from the arbiter's record: stale stays stale, the recorded primary is primary. */
  load (state: ArbiterState): void {
    this.state = state
    this.incarnations = { ...state.incarnations }
    const byName = new Map(this.replicas.map((r) => [r.name, r]))
    for (const name of [state.primary, ...state.stale]) {
      if (name !== null && !byName.has(name)) {
        const msg = `state names replica '${name}', which is not in the config`
        throw new FtproxyError('ERR_FTPROXY_STATE', msg, { replica: name })
      }
    }
    for (const r of this.replicas) r.role = state.stale.includes(r.name) ? 'stale' : 'backup'
    const primary = state.primary === null
      ? this.replicas.find((r) => r.role !== 'stale')
      : byName.get(state.primary)
    if (!primary || primary.role === 'stale') {
      throw new FtproxyError('ERR_FTPROXY_NO_REPLICA',
        'every replica is stale: nothing can serve without losing data; re-seed a replica, ' +
        `or remove ${this.o.config().state_dir}/state.json to start over from the config`)
    }
    primary.role = 'primary'
    this.primary = primary
    const { epoch, stale } = state
    this.o.log.info('state_loaded', { epoch, primary: primary.name, stale })
  }

  /**
   * An agent named its server's incarnation (each time its channel connects): another
   * process than the state vouched for lost the state; an unknown one is recorded.
   */
  reported (r: Replica, id: string | null): void {
    const verdict = compare(this.incarnations[r.name], id)
    if (verdict === 'same' || id === null) return
    if (verdict !== 'changed') {
      // Recorded, so that the next front can tell whether it is still the same process.
      this.incarnations[r.name] = id
      if (!this.o.lifecycle.is('starting')) void this.recordIncarnations()
      return
    }
    r.log.error('replica_restarted', { recorded: this.incarnations[r.name], now: id })
    // Before the start decided, it decides (Front.agentsReported); after, a failure (which
    // waits for serving to begin, see started()).
    if (this.restartedAtStart) this.restartedAtStart.add(r.name)
    else this.fail(r, 'its server restarted: its state is gone')
  }

  /** Serving began: what failed before now fails for real; what was learnt is recorded. */
  started (): void {
    const failed = [...this.failedAtStart]
    this.failedAtStart.clear()
    for (const [r, why] of failed) this.fail(r, why)
    void this.recordIncarnations()
  }

  /**
   * Record the incarnations if they changed (one an agent named since the last record);
   * false: the test-and-set was lost (serving stops, if it had begun).
   */
  async recordIncarnations (): Promise<boolean> {
    if (sameRecord(this.state.incarnations, this.incarnations)) return true
    const won = await this.cas({ epoch: this.state.epoch + 1, primary: null })
    if (!won) this.stopServing(this.lost('the servers\' incarnations'))
    return won
  }

  /** At start: these replicas' servers are not the processes the state vouched for. */
  restarted (names: Iterable<string>): void {
    const set = new Set(names)
    for (const r of this.replicas) {
      if (!set.has(r.name)) continue
      r.detach()
      this.setRole(r, 'stale', 'its server restarted: its state is gone')
    }
  }

  /**
   * close(): the front stopped these supervised servers; they come back empty (STOPPED
   * assumes in-memory servers; one that persists comes back as it was stopped, which is in
   * sync too: the front drained before). If that is every replica, the serving ones are all
   * alike and none of them is stale at the next start; a stale one stays stale. Else the
   * stopped ones are stale, and the primary is one that is not.
   */
  async stopped (names: readonly string[]): Promise<void> {
    if (names.length === 0 || this.state === undefined) return
    const all = names.length === this.replicas.length
    for (const r of this.replicas) {
      if (!names.includes(r.name)) continue
      if (!all) {
        this.incarnations[r.name] = STOPPED
        r.role = 'stale'
      } else if (r.serving) {
        this.incarnations[r.name] = STOPPED
      }
    }
    const primary = this.primary.serving
      ? this.primary.name
      : this.replicas.find((r) => r.serving)?.name ?? null
    await this.cas({ epoch: this.state.epoch + 1, primary })
  }

  /** After the startup probes: serve from a reachable replica, in an epoch of our own. */
  async takeEpoch (): Promise<void> {
    if (this.primary.role !== 'primary') {
      const primary = this.replicas.find((r) => r.role === 'backup')
      if (!primary) throw new FtproxyError('ERR_FTPROXY_NO_REPLICA', 'no replica is reachable')
      this.primary = primary
      this.setRole(primary, 'primary', 'startup: configured primary unreachable')
    }
    // Every front process serves in an epoch of its own: its log starts at seq 1, and agents
    // let a new front take over only with an epoch newer than the last one's.
    this.arbiterPrimary = this.primary.name
    const { epoch } = this.state
    if (!await this.cas({ epoch: epoch + 1, primary: this.primary.name })) {
      const msg = 'lost the test-and-set for the first epoch'
      throw new FtproxyError('ERR_FTPROXY_ARBITER_LOST', msg)
    }
  }

  // ---- role changes -----------------------------------------------------------------------

  /** The one place a role changes. */
  setRole (r: Replica, role: Role, reason: string): void {
    if (r.role === role) return
    this.o.log.info('replica_role', { replica: r.name, from: r.role, to: role, reason })
    r.role = role
    this.o.events.emit('roles')
  }

  /**
   * Give a serving replica its transport, its events routed to the connections. `joined`:
   * it joins in the middle of the log (a re-seed's cut), and sees only what it is given.
   */
  attach<J extends boolean = false> (r: Replica, joined?: J):
  J extends true ? JoinedTransport : Transport
  attach (r: Replica, joined = false): Transport {
    const t = joined ? new JoinedTransport(this.o.transport(r, true)) : this.o.transport(r)
    const conns = this.o.conns
    r.transport = t
    r.health.prober = t.prober
    t.on('turn', (ms) => this.turnEnded(ms))
    t.on('control_refused', (reason) => r.log.warn('control_refused', { reason }))
    t.on('lane_off', (reason) => r.log.warn('lane_disabled', { reason }))
    t.on('incarnation', (id) => this.reported(r, id))
    t.on('unframed', (conn, error) => {
      r.log.warn('replies_unaligned', { conn, reason: 'reader_error', error })
    })
    t.on('ack', (entry) => conns.onAck(r, entry))
    t.on('output', (conn, data) => conns.onOutput(r, conn, data))
    t.on('output_end', (conn, err) => conns.onOutputEnd(r, conn, err))
    t.on('closed', (conn) => conns.onClosed(r, conn))
    t.on('conn_failed', (conn, err) => conns.onConnFailed(r, conn, err))
    t.on('failed', (err) => {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ERR_FTPROXY_FENCED') {
        this.o.log.error('fenced', { replica: r.name, error: err.message })
      }
      if (r.viaAgent) r.health.state = 'down'
      this.fail(r, r.viaAgent ? `agent: ${err.message}` : `connect: ${code ?? err.message}`)
    })
    return t
  }

  private turnEnded (ms: number): void {
    const c = this.o.counters
    c.turns++
    c.turn_wait_ms += ms
    const i = TURN_WAIT_BOUNDS_MS.findIndex((bound) => ms <= bound)
    const bucket = i < 0 ? TURN_WAIT_BOUNDS_MS.length : i
    c.turn_wait_buckets[bucket] = (c.turn_wait_buckets[bucket] ?? 0) + 1
  }

  /** Health says r answers again. */
  onHealthUp (r: Replica): void {
    this.o.log.info('replica_up', { replica: r.name })
    if (this.mayJoinEmpty(r)) {
      void this.joinEmpty(r)
    } else if (r.role === 'down' && this.o.lifecycle.active) {
      // Down while input was logged: it missed some; it comes back by a re-seed.
      this.setRole(r, 'stale', 'reachable again; it missed input while down')
      void this.persistStale()
    }
  }

  // A replica that was down before any input was logged missed nothing: it may back up.
  private mayJoinEmpty (r: Replica): boolean {
    return r.role === 'down' && this.o.input.lastSeq === 0 && this.o.lifecycle.active
  }

  // ... unless its server is not the process the state vouched for: its state is gone.
  private async joinEmpty (r: Replica): Promise<void> {
    const now = await this.o.incarnation(r)
    if (!this.mayJoinEmpty(r)) return
    if (compare(this.incarnations[r.name], now) === 'changed') {
      this.o.log.error('replica_restarted', {
        replica: r.name, recorded: this.incarnations[r.name], now,
      })
      this.setRole(r, 'stale', 'its server restarted: its state is gone')
      void this.persistStale()
      return
    }
    if (now !== null) this.incarnations[r.name] = now
    this.setRole(r, 'backup', 'reachable before any input')
    if (r.viaAgent) r.health.stop() // from now on its channel tells
    this.attach(r)
    void this.persistStale()
    this.reportProtection('backup joined')
  }

  /** r's supervised process exited. */
  onExit (r: Replica, why: string): void {
    if (this.o.lifecycle.is('closing')) return
    // A re-seed's target: the copy went into a process that is gone (the cut looks again
    // after its record, so a target that exits while that is written does not join).
    if (r.role === 'seeding') {
      this.checkAgain(r) // what answers next is another process
      this.setRole(r, 'stale', `the re-seed's target exited: ${why}`)
    }
    this.fail(r, why)
    if (r.role === 'stale') {
      const note = 'restarted server lost its state; it will not serve until re-seeded'
      r.log.warn('replica_stale_restart', { note })
    }
  }

  /** A replica failed: the primary is replaced, a backup is retired. */
  fail (r: Replica, reason: string): void {
    // Before the front serves (it waits for its agents' handshakes), failures wait for it.
    if (r.serving && this.o.lifecycle.is('starting')) this.failedAtStart.set(r, reason)
    if (!r.serving || !this.o.lifecycle.active) return
    this.o.log.warn('replica_down', { replica: r.name, reason, role: r.role })
    if (r === this.primary) void this.failover(reason, performance.now())
    else this.retire(r, 'stale', reason)
  }

  /** A backup's output differs from the primary's: it is stale from now on. */
  diverged (r: Replica, conn: number, offset: number, primary: Buffer, backup: Buffer,
    what: string): void {
    if (!r.serving) return
    this.o.counters.divergences++
    noteDivergence(r.reseed)
    this.o.log.error('divergence', {
      replica: r.name,
      conn,
      offset,
      what,
      primary_hex: primary.toString('hex'),
      backup_hex: backup.toString('hex'),
    })
    this.retire(r, 'stale', `divergence on conn ${conn} at offset ${offset}`)
  }

  /** Replicas that owe output others produced longer than timeouts.stall ago have failed. */
  checkStalls (every: number, now = performance.now()): void {
    // Called every `every` ms. Much later than that, the front itself was not running
    // (SIGSTOP, a long pause of the process): that time is nobody's stall. It is taken off
    // every debt, and this round is skipped so that what arrived meanwhile is read first.
    const late = now - (this.lastStallCheck ?? now) - every
    this.lastStallCheck = now
    if (late > Math.max(PAUSE_MS, every)) {
      this.o.conns.discount(late)
      this.o.log.warn('front_paused', { ms: Math.round(late) })
      return
    }
    const stall = this.o.config().timeouts.stall
    for (const i of this.o.conns.stalled(now, stall)) {
      const r = this.replicas[i]
      if (!r) continue
      const why = `stall: owes output that another replica produced more than ${stall}ms ago`
      this.fail(r, why)
    }
  }

  /** Take a backup out of service: it missed (or will miss) inputs, so it is stale. */
  private retire (r: Replica, role: 'stale' | 'down', reason: string): void {
    r.detach()
    this.checkAgain(r)
    // Before any input was logged nothing was missed: the replica is only down.
    this.setRole(r, role === 'stale' && this.o.input.lastSeq > 0 ? 'stale' : 'down', reason)
    this.o.conns.dropReplica(r)
    void this.persistStale() // down too: it may miss input at any moment
    this.reportProtection(`${r.name}: ${reason}`)
    this.o.conns.afterProgress()
  }

  // A replica out of service: checks made from now on tell when it answers again (and may be
  // re-seeded); an agent replica's channel told its liveness while it served.
  private checkAgain (r: Replica): void {
    r.health.reset()
    if (r.viaAgent) r.health.start()
  }

  // ---- failover ---------------------------------------------------------------------------

  /**
   * The primary failed: win the test-and-set for epoch+1 naming a backup, promote it and
   * splice every connection. No backup, or a lost test-and-set: stop serving.
   */
  async failover (reason: string, detectedAt: number): Promise<void> {
    const life = this.o.lifecycle
    if (life.is('failing_over')) return
    life.set('failing_over', reason)
    let old = this.primary
    let why = reason
    this.leave(old, why)
    let to = this.pickBackup()
    let epoch: number
    for (;;) {
      if (!to) {
        await this.persistStale()
        return this.stopServing(`primary ${old.name} failed (${why}) and no backup can take over`)
      }
      epoch = this.state.epoch + 1
      this.arbiterPrimary = to.name
      if (!await this.cas({ epoch, primary: to.name })) {
        return this.stopServing(this.lost(`epoch ${epoch}`))
      }
      this.primary = to
      if (to.serving) break
      // It failed while the test-and-set was in flight: go on to the next backup.
      why = `${why}; then ${to.name} failed`
      old = to
      this.leave(old, why)
      to = this.pickBackup()
    }
    this.promote(old, to, { epoch, reason: why, detectedAt })
    // Back to the switchover it interrupted, if that is still winding down.
    if (life.is('failing_over')) {
      life.set(this.holding ? 'switching' : 'serving', `failover to ${to.name}`)
    }
    this.o.events.emit('failover', this.lastFailover as FailoverInfo)
    this.reportProtection(`failover from ${old.name}`)
    this.o.conns.afterProgress()
  }

  private pickBackup (): Replica | undefined {
    return this.replicas.find((r) =>
      r.role === 'backup' && r.health.state !== 'down' && r.transport !== null)
  }

  // The failed primary leaves service: it missed input (stale) unless none was logged yet.
  private leave (old: Replica, reason: string): void {
    old.detach()
    this.checkAgain(old)
    this.setRole(old, this.o.input.lastSeq > 0 ? 'stale' : 'down', reason)
  }

  private promote (old: Replica, to: Replica,
    f: { epoch: number, reason: string, detectedAt: number }): void {
    this.setRole(to, 'primary', `failover from ${old.name}`)
    this.o.conns.promote(to, performance.now())
    const { epoch, reason } = f
    const info: FailoverInfo = {
      from: old.name, to: to.name, epoch, duration_ms: ms(f.detectedAt), reason,
    }
    this.lastFailover = info
    this.o.counters.failovers++
    this.o.log.warn('failover', { ...info })
  }

  /** The front cannot serve safely any more: it stops taking clients and drops them. */
  stopServing (reason: string): void {
    if (!this.o.lifecycle.active) return
    this.o.lifecycle.set('stopped', reason)
    this.o.log.error('serving_stopped', { reason })
    this.o.hooks.stop()
    this.o.events.emit('stopped', reason)
  }

  // ---- switchover -------------------------------------------------------------------------

  /**
   * Planned switchover with zero loss: hold new input, wait until backup `target` (default:
   * the first backup) has every entry and has produced exactly the primary's output on every
   * connection, move the epoch through the arbiter, swap roles (the old primary stays in
   * sync, as a backup), resume. Refused with ERR_FTPROXY_NOT_IN_SYNC when no backup gets in
   * sync within timeouts.stall; input resumes either way.
   */
  async switchover (target?: string): Promise<FailoverInfo> {
    const to = this.replicas.find((r) =>
      target === undefined ? r.role === 'backup' : r.name === target)
    const life = this.o.lifecycle
    if (!life.is('serving')) {
      throw notInSync('a failover or switchover is already under way')
    }
    if (!to || to.role !== 'backup') {
      const why = target === undefined
        ? 'no backup to switch to'
        : `${target} is not a backup in service`
      throw notInSync(why)
    }
    const t0 = performance.now()
    const from = this.primary
    life.set('switching', `switchover to ${to.name}`)
    this.switchingTo = to
    this.o.hooks.hold()
    try {
      return await this.switchTo(from, to, t0)
    } finally {
      this.switchingTo = null
      if (life.is('switching')) life.set('serving', 'switchover over')
      this.o.hooks.release()
      this.o.conns.afterProgress()
    }
  }

  private async switchTo (from: Replica, to: Replica, t0: number): Promise<FailoverInfo> {
    const stall = this.o.config().timeouts.stall
    const intervened = (): boolean =>
      !this.o.lifecycle.is('switching') || to.role !== 'backup' || this.primary !== from
    if (!await this.untilInSync(t0 + stall, intervened)) {
      throw notInSync(`${to.name} did not get in sync within ${stall}ms`)
    }
    const epoch = this.state.epoch + 1
    this.arbiterPrimary = to.name
    if (!await this.cas({ epoch, primary: to.name })) {
      this.arbiterPrimary = from.name
      this.stopServing(this.lost(`epoch ${epoch} (switchover)`))
      throw new FtproxyError('ERR_FTPROXY_ARBITER_LOST', `lost the test-and-set for epoch ${epoch}`)
    }
    if (intervened()) {
      // A failure came in during the test-and-set: the failover in flight (or the next
      // one) decides. Put back the primary the arbiter should name if nothing else will.
      if (!this.o.lifecycle.is('failing_over') && this.primary === from) {
        this.arbiterPrimary = from.name
        void this.cas({ epoch: this.state.epoch + 1, primary: null })
      }
      throw notInSync(`a failure during the switchover to ${to.name}; the failover rules apply`)
    }
    this.o.conns.swap(from, to, performance.now())
    this.primary = to
    this.setRole(to, 'primary', `switchover from ${from.name}`)
    this.setRole(from, 'backup', `switchover to ${to.name}`)
    const info: FailoverInfo = {
      from: from.name, to: to.name, epoch, duration_ms: ms(t0), reason: 'switchover',
    }
    this.lastFailover = info
    this.o.counters.switchovers++
    this.o.log.warn('switchover', { ...info })
    this.o.events.emit('failover', info)
    return info
  }

  /** The server process r is now (lib/incarnation.ts). */
  incarnationOf (r: Replica): Promise<string | null> {
    return this.o.incarnation(r)
  }

  /** A re-seed's cut (front/cut.ts). */
  cut (target: Replica, source: Replica, finish: (holdEnd: number) => Promise<void>,
    opts: CutOptions): Promise<CutInfo> {
    return cut(this, this.o, target, source, finish, opts)
  }

  /** Polls inSync() until it holds (true), the deadline passes or `intervened` says (false). */
  untilInSync (deadline: number, intervened: () => boolean): Promise<boolean> {
    return pollUntil(() => this.inSync(), deadline, intervened)
  }

  // Every entry acknowledged by every serving replica, every output produced by all alike.
  // Serial protocols acknowledge entries a replica holds before it runs them: in sync also
  // means none is still waiting for its turn.
  private inSync (): boolean {
    // Every transport is asked (an agent's answer takes a round trip: they go out together).
    const busy = this.o.replicas.filter((r) =>
      r.transport !== null && (r.transport.queued > 0 || r.transport.running === true))
      .length > 0
    return !busy && this.o.input.length === 0 && this.o.conns.inSync()
  }

  // ---- arbiter ----------------------------------------------------------------------------

  // Being re-seeded is being stale, until the cut is recorded; so is being down (it may miss
  // input at any moment: a front that restarts must not take it for in sync).
  private staleNames (): string[] {
    return this.replicas
      .filter((r) => !r.serving && r !== this.joining)
      .map((r) => r.name)
  }

  /** Record the stale set if it changed (a re-seed that failed after its record). */
  persistStale (): Promise<void> {
    const stale = this.staleNames()
    const known = this.state.stale
    if (stale.length === known.length && stale.every((n) => known.includes(n))) {
      return Promise.resolve()
    }
    return this.cas({ epoch: this.state.epoch + 1, primary: null }).then((won) => {
      if (!won) this.stopServing(this.lost('the stale replicas'))
    })
  }

  // Test-and-set through the arbiter, one at a time. Epoch, stale set and incarnations
  // are computed when it runs; so is the primary when `next.primary` is null (a queued record
  // of stale replicas must not name a primary that a failover moved meanwhile).
  cas (next: { epoch: number, primary: string | null }): Promise<boolean> {
    const run = async (): Promise<boolean> => {
      const expect = this.state.epoch
      const primary = next.primary ?? this.arbiterPrimary
      const epoch = Math.max(next.epoch, expect + 1)
      const incarnations = { ...this.incarnations }
      const want = { primary, epoch, stale: this.staleNames(), owner: '', incarnations }
      try {
        const won = await this.o.arbiter.compareAndSet(expect, want)
        if (won) this.state = want
        else this.o.log.error('arbiter_lost', { epoch: want.epoch })
        return won
      } catch (err) {
        const { message, code, details } = err as FtproxyError
        const cause = typeof details?.cause === 'string' ? details.cause : undefined
        this.o.log.error('arbiter_error', { error: message, code, cause })
        this.arbiterFault = cause ?? code ?? message
        return false
      }
    }
    const p = this.arbiterQueue.then(run, run)
    this.arbiterQueue = p
    return p
  }

  // Why serving stops after a test-and-set that did not win: lost to another front, or the
  // arbiter could not record it (a full state disk…). Either way a role change that is not
  // recorded must not be acted on: another front could act on the old record.
  lost (what: string): string {
    const fault = this.arbiterFault
    this.arbiterFault = null
    if (fault === null) return `lost the arbiter's test-and-set for ${what}`
    const hint = fault === 'ENOSPC' ? ' (no space left on the state disk)' : ''
    return `could not record ${what} on the arbiter: ${fault}${hint}; ` +
      'a role change that cannot be recorded must not be acted on'
  }

  /** Wait for the test-and-sets in flight (close). */
  async settled (): Promise<void> {
    await this.arbiterQueue.catch(() => {})
  }

  /** Log `protected` / `unprotected` when it changes. */
  reportProtection (reason: string): void {
    const backups = this.replicas.filter((r) => r.role === 'backup').map((r) => r.name)
    const now = backups.length > 0
    if (now === this.isProtected) return
    this.isProtected = now
    this.protectedSince = new Date()
    if (now) this.o.log.info('protected', { backups })
    else this.o.log.warn('unprotected', { reason, on_backup_loss: this.o.config().on_backup_loss })
  }
}
