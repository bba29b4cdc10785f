// The front: owns the client-facing socket and puts the parts together.
//
//   client ──▶ listener ──▶ Conn ──log(seq)──▶ Transport(primary) ──output─┐
//                 │          ▲  └──log(seq)──▶ Transport(backup)  ──output─┤
//                 │          └── commit rule ◀── OutputStream (compare) ◀──┘
//                 └── Roles: failover, switchover, arbiter ── Lifecycle (one state)
//
// front.ts   start, close, reload, status, the listener
// conn.ts    one client connection: its events, the commit rule, backpressure
// conns.ts   the table of connections and what applies to all of them
// roles.ts   role changes, failover, switchover, arbiter calls
// replica.ts a replica: its transport, supervision, health

import { EventEmitter } from 'node:events'
import net from 'node:net'
import { performance } from 'node:perf_hooks'
import { randomBytes } from 'node:crypto'
import os from 'node:os'
import { formatHostPort, type HostPort } from '../address.js'
import { createArbiter, type Arbiter, type ArbiterState } from '../arbiter/index.js'
import type { Config } from '../config/index.js'
import { FtproxyError } from '../errors.js'
import { waitReachable } from '../health.js'
import type { Logger } from '../logger.js'
import { nullLogger } from '../logger.js'
import { fdBudget, fdLimit } from '../util/fds.js'
import { listen } from '../util/listen.js'
import type { FrontCounters } from './counters.js'
import type { ProtocolName } from '../protocol/types.js'
import type { ConnTable } from './conns.js'
import { createCore } from './core.js'
import { newCounters } from './counters.js'
import type { Lifecycle } from './lifecycle.js'
import type { InputLog } from './log.js'
import { Replica, transportFactory, type Role, type TransportFactory } from './replica.js'
import type { FailoverInfo, FrontEvents, Roles } from './roles.js'
import {
  UNREADABLE, checkAtStart, readAtStart, readIdentity, type IdentityRead,
} from '../incarnation.js'
import { Reseeder, type LastReseed } from './reseed.js'

export type { FrontCounters } from './counters.js'
export type { Role } from './replica.js'
export type { FailoverInfo, FrontEvents } from './roles.js'

/**
 * How often a client whose input is paused (backpressure) is read once anyway: a paused
 * socket is not read, so its reset would go unnoticed, and the connection with everything
 * it holds would live as long as the backpressure lasts.
 */
const PAUSED_PROBE_MS = 1000

/**
 * How often connections already over a cap that fell (new connections came) are held back,
 * and those under one that rose are let go. New data is checked against the cap at once.
 */
const BUDGET_EVERY_MS = 100

/** Descriptors kept for what is not a client: listeners, admin, checks, supervisors, logs. */
const FD_RESERVE = 64

export interface ReplicaStatus {
  name: string
  role: Role
  health: string
  /** Entries handed to it and not yet acknowledged. */
  lag_entries: number
  /** Client bytes logged and not yet acknowledged by it. */
  lag_bytes: number
  /** Serial protocols: entries it holds (acknowledged) that wait for their turn. */
  queued_entries: number
  pid?: number
  /** Its re-seeds: attempts, failures, divergences, the last error, the next try (ms). */
  reseed: {
    attempts: number
    failures: number
    divergences: number
    last_error: string | null
    retry_in_ms: number
  }
}

export interface FrontStatus {
  epoch: number
  primary: string
  protected: boolean
  serving: boolean
  /** config.protocol, as running: a changed config takes effect only after a restart. */
  protocol: ProtocolName
  replicas: ReplicaStatus[]
  /** When protection last changed (ISO time). */
  protected_since: string
  connections: number
  log_entries: number
  log_bytes: number
  output_held_bytes: number
  /** Everything the connections make the front hold (input, output, ahead, socket buffers). */
  buffered_bytes: number
  /** What each buffer of a connection may hold now: max_lag, less when memory is tight. */
  lag_cap_bytes: number
  last_failover: FailoverInfo | null
  /** Re-protection: the re-seed under way, counts, and the last one. */
  reseed: { running: string | null, total: number, failed: number, last: LastReseed | null }
}

export interface FrontOptions {
  log?: Logger
  /** Defaults to the backend named by config.arbiter. */
  arbiter?: Arbiter
  /** Defaults to direct (Applier) and agent (log channel) transports. */
  transport?: TransportFactory
  /**
   * `ftproxy run --accept-state-from NAME`: the operator vouches for this replica's state
   * as it is now (every other replica is stale, to be re-seeded from it).
   */
  acceptStateFrom?: string
}

export class Front extends EventEmitter<FrontEvents> {
  readonly replicas: Replica[]
  readonly counters: FrontCounters = newCounters()

  /** The seconds each release waited for the commit rule (set by the admin endpoint). */
  onCommitWait?: (seconds: number) => void

  private cfg: Config
  private readonly logger: Logger
  private readonly arbiter: Arbiter
  private readonly lifecycle: Lifecycle
  private readonly input: InputLog
  private readonly conns: ConnTable
  private readonly roles: Roles
  private readonly reseeder: Reseeder
  private readonly acceptStateFrom?: string
  private server?: net.Server
  private bound?: HostPort
  private stallTimer?: NodeJS.Timeout
  private pausedProbeTimer?: NodeJS.Timeout
  private budgetTimer?: NodeJS.Timeout
  /** max_connections, or less when the open-files limit cannot hold that many clients. */
  private maxConnections = 0
  /** Clients that connected while a switchover holds input: read once it is over. */
  private parked: net.Socket[] = []

  constructor (cfg: Config, opts: FrontOptions = {}) {
    super()
    this.cfg = cfg
    this.logger = opts.log ?? nullLogger()
    this.arbiter = opts.arbiter ?? createArbiter(cfg.arbiter, cfg.state_dir)
    this.replicas = cfg.replicas.map((r, i) => new Replica(i, r, cfg, this.logger))
    // This process, to agents: a new id starts a new session there.
    const frontId = `${os.hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`
    const core = createCore({
      config: () => this.cfg,
      log: this.logger,
      arbiter: this.arbiter,
      replicas: this.replicas,
      transport: opts.transport ??
        transportFactory(() => this.cfg, frontId, () => this.roles.state.epoch,
          (r) => this.roles.incarnations[r.name]),
      hooks: { hold: () => this.hold(), release: () => this.release(), stop: () => this.stop() },
      events: this,
      counters: this.counters,
      onCommitWait: () => this.onCommitWait,
      incarnation: (r) => this.incarnationOf(r),
    })
    this.lifecycle = core.lifecycle
    this.input = core.input
    this.conns = core.conns
    this.roles = core.roles
    this.acceptStateFrom = opts.acceptStateFrom
    this.reseeder = new Reseeder({
      config: () => this.cfg,
      replicas: this.replicas,
      roles: this.roles,
      lifecycle: this.lifecycle,
      log: this.logger,
      counters: this.counters,
    })
    this.on('roles', () => this.reseeder.poke())
  }

  /** The bound client-facing address (after start). */
  get address (): HostPort {
    if (!this.bound) throw new Error('front not started')
    return this.bound
  }

  async start (): Promise<void> {
    const state = await this.arbiter.open()
    try {
      await this.begin(state)
    } catch (err) {
      this.teardown()
      this.server?.close()
      // Servers it adopted hold the data: they run on, for the next front to adopt.
      for (const r of this.replicas) r.supervisor?.release()
      await this.arbiter.close()
      throw err
    }
  }

  private async begin (state: Awaited<ReturnType<Arbiter['open']>>): Promise<void> {
    const roles = this.roles
    roles.load(this.accepting(state))
    this.maxConnections = this.connectionLimit()
    for (const r of this.replicas) {
      r.supervise(this.cfg, this.logger, (why) => roles.onExit(r, why))
      r.supervisor?.on('spawn', () => this.watchReturn(r))
    }
    await this.awaitReplicas()
    await this.checkIncarnations()
    await roles.takeEpoch()
    for (const r of this.replicas) {
      if (r.serving) roles.attach(r)
      r.health.on('up', () => {
        roles.onHealthUp(r)
        this.reseeder.poke()
      })
      r.health.on('down', (reason) => roles.fail(r, reason))
      r.health.on('local_error', (err) => {
        const code = (err as NodeJS.ErrnoException).code ?? err.message
        r.log.warn('health_check_skipped', { code })
      })
      // An agent replica's liveness comes from its channel; one that is down at start is
      // checked like a direct one until it answers (then it may join, see onHealthUp).
      if (!r.viaAgent || !r.serving) r.health.start()
    }
    await this.agentsReported()
    const stallEvery = Math.max(20, Math.min(1000, Math.floor(this.cfg.timeouts.stall / 5)))
    roles.lastStallCheck = performance.now()
    this.stallTimer = setInterval(() => roles.checkStalls(stallEvery), stallEvery)
    this.stallTimer.unref()
    this.pausedProbeTimer = setInterval(() => this.conns.probePaused(), PAUSED_PROBE_MS)
    this.pausedProbeTimer.unref()
    this.budgetTimer = setInterval(() => this.conns.rebalance(), BUDGET_EVERY_MS)
    this.budgetTimer.unref()

    await this.listen()
    this.lifecycle.set('serving', 'listening') // unless close() came first: closing is final
    roles.started()
    roles.reportProtection('startup')
    this.reseeder.start()
    this.reseeder.poke()
  }

  status (): FrontStatus {
    const { held, lag } = this.conns.totals()
    const roles = this.roles
    return {
      epoch: roles.state.epoch,
      primary: roles.primary.name,
      protected: roles.isProtected === true,
      serving: this.lifecycle.active,
      protocol: this.cfg.protocol,
      replicas: this.replicas.map((r) => ({
        name: r.name,
        role: r.role,
        health: r.health.state,
        lag_entries: r.transport?.unacked ?? 0,
        lag_bytes: lag.get(r) ?? 0,
        queued_entries: r.transport?.queued ?? 0,
        pid: r.supervisor?.pid,
        reseed: {
          attempts: r.reseed.attempts,
          failures: r.reseed.failures,
          divergences: r.reseed.divergences,
          last_error: r.reseed.lastError,
          retry_in_ms: Math.max(0, Math.round(r.reseed.notBefore - performance.now())),
        },
      })),
      protected_since: roles.protectedSince.toISOString(),
      connections: this.conns.size,
      log_entries: this.input.length,
      log_bytes: this.input.bytes,
      output_held_bytes: held,
      buffered_bytes: this.conns.usage(),
      lag_cap_bytes: this.conns.lagCap(),
      last_failover: roles.lastFailover,
      reseed: {
        running: this.reseeder.running?.name ?? null,
        total: this.counters.reseeds,
        failed: this.counters.reseed_failures,
        last: this.reseeder.last,
      },
    }
  }

  /** Re-seed stale replica `name` now (POST /reseed); resolves once it joined as a backup. */
  reseed (name: string): Promise<LastReseed> {
    return this.reseeder.request(name)
  }

  /**
   * SIGHUP: take what can change safely from a new config (log level, health-check timings,
   * limits) and say which other changed keys need a restart. Agent replicas keep the window
   * they announced until their channel reconnects.
   */
  reload (next: Config): { applied: string[], restart: string[] } {
    const applied: string[] = []
    const restart: string[] = []
    const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b)
    const live: ReadonlyArray<keyof Config> = ['health_check', 'limits']
    for (const key of Object.keys(next) as Array<keyof Config>) {
      if (key === 'file' || key === 'log' || same(this.cfg[key], next[key])) continue
      if (live.includes(key)) applied.push(key)
      else restart.push(key)
    }
    if (next.log.level !== this.cfg.log.level) applied.push('log.level')
    if (next.log.format !== this.cfg.log.format) restart.push('log.format')
    const log = { ...this.cfg.log, level: next.log.level }
    this.cfg = { ...this.cfg, log, health_check: next.health_check, limits: next.limits }
    this.logger.setLevel(next.log.level)
    if (applied.includes('limits')) this.maxConnections = this.connectionLimit()
    // A check's timer restarts only when its timing changed: a reload that restarted it every
    // time would, repeated faster than the interval, keep every check from ever running.
    if (applied.includes('health_check')) {
      for (const r of this.replicas) r.health.retime(next.health_check)
    }
    this.logger.info('reload', { file: next.file, applied, restart_needed: restart })
    return { applied, restart }
  }

  /** Planned switchover with zero loss (see Roles.switchover). */
  switchover (target?: string): Promise<FailoverInfo> {
    return this.roles.switchover(target)
  }

  /** Stop accepting, let released output drain (bounded by timeouts.linger), stop everything. */
  async close (): Promise<void> {
    if (this.lifecycle.is('closing')) return
    const wasServing = this.lifecycle.active
    this.lifecycle.set('closing', 'close()')
    const server = this.server
    const closed = new Promise<void>((resolve) => {
      if (server) server.close(() => resolve())
      else resolve()
    })
    const deadline = performance.now() + this.cfg.timeouts.linger
    while (performance.now() < deadline && this.conns.undrained()) {
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    this.conns.destroyAll()
    await closed
    this.teardown()
    await this.stopReplicas()
    // Recorded only by a front that served: one that never did knows nothing of the data.
    if (wasServing) await this.roles.stopped(this.supervised())
    await this.roles.settled()
    await this.arbiter.close()
    this.logger.info('shutdown', {})
  }

  /**
   * A start that failed after start() resolved (the admin endpoint could not listen): stop
   * serving but keep every server running, and recorded, for the next front to adopt; the
   * state stays as it is. They may hold the only copy of the data.
   */
  async abandon (): Promise<void> {
    if (this.lifecycle.is('closing')) return
    this.lifecycle.set('closing', 'abandon()')
    this.server?.close()
    this.conns.destroyAll()
    this.teardown()
    for (const r of this.replicas) r.supervisor?.release()
    await this.roles.settled()
    await this.arbiter.close()
  }

  private supervised (): string[] {
    return this.replicas.filter((r) => r.supervisor).map((r) => r.name)
  }

  // ---- replicas ---------------------------------------------------------------------------

  // Wait (bounded) until every replica that may serve accepts connections.
  private async awaitReplicas (): Promise<void> {
    const deadline = performance.now() + Math.max(5000, this.cfg.timeouts.connect * 3)
    const probeTimeout = this.cfg.health_check.timeout
    await Promise.all(this.replicas.filter((r) => r.serving).map(async (r) => {
      const err = await waitReachable(r.address, { probeTimeout, deadline })
      if (!err) {
        this.logger.info('replica_up', { replica: r.name })
        r.health.state = 'up'
        return
      }
      const why = (err as NodeJS.ErrnoException).code ?? err.message
      const reason = `unreachable at startup: ${why}`
      this.logger.warn('replica_down', { replica: r.name, reason })
      r.health.state = 'down'
      this.roles.setRole(r, 'down', 'unreachable at startup')
    }))
  }

  // A stale replica's server was started again: checked at once until it answers, not at
  // the health checks' pace, so that its re-seed starts as soon as it can.
  private watchReturn (r: Replica): void {
    if (r.serving) return
    const deadline = performance.now() + 3 * this.cfg.timeouts.connect
    const probeTimeout = this.cfg.health_check.timeout
    void waitReachable(r.address, { probeTimeout, deadline }).then((err) => {
      if (err !== null || r.serving || !this.lifecycle.active) return
      r.health.reset()
      void r.health.probeNow()
    })
  }

  // ---- incarnations ----------------------------------------------------------------------

  private async incarnationOf (r: Replica): Promise<string | null> {
    return (await this.identityOf(r)).id
  }

  private identityOf (r: Replica): Promise<IdentityRead> {
    const sup = r.supervisor
    const source = {
      name: r.name,
      address: r.address,
      // Supervised with no process running: whatever runs there next starts empty.
      supervised: sup ? () => sup.incarnation ?? 'none' : null,
      agent: r.viaAgent ? () => r.transport?.incarnation ?? null : null,
    }
    return readIdentity(source, this.cfg.protocol, this.cfg.health_check.timeout)
  }

  /**
   * Agents name their servers' incarnations in their handshakes, once their channels are up:
   * wait for that (bounded) before any client is served, so that a server that restarted is
   * never served from. If every one restarted, nothing may serve.
   */
  private async agentsReported (): Promise<void> {
    const agents = this.replicas.filter((r) => r.viaAgent && r.serving)
    if (agents.length === 0 || this.acceptStateFrom !== undefined) {
      this.roles.restartedAtStart = null
      return
    }
    const deadline = performance.now() + 2 * this.cfg.timeouts.connect
    await Promise.all(agents.map((r) => new Promise<void>((resolve) => {
      const t = r.transport
      const timer = setTimeout(resolve, Math.max(0, deadline - performance.now()))
      const done = (): void => { clearTimeout(timer); resolve() }
      t?.once('incarnation', done)
      t?.once('failed', done)
      if (!t) done()
    })))
    const restarted = [...this.roles.restartedAtStart ?? []]
    this.roles.restartedAtStart = null // decided: a later report is a failure
    if (restarted.length === 0) {
      // What the agents named is recorded before anyone is served from them.
      if (await this.roles.recordIncarnations()) return
      throw new FtproxyError('ERR_FTPROXY_ARBITER_LOST', 'could not record the agents\' servers')
    }
    if (this.replicas.every((r) => !r.serving || restarted.includes(r.name))) {
      throw new FtproxyError('ERR_FTPROXY_STATE_LOST',
        `the servers behind ${restarted.join(', ')} restarted since the state was recorded: ` +
        'none holds the data any more. If one does, start with --accept-state-from NAME',
        { replicas: restarted })
    }
    this.roles.restarted(restarted)
    // The primary's server restarted: serve from another, in a new epoch (nothing was served).
    if (this.roles.primary.role !== 'primary') await this.roles.takeEpoch()
    else await this.roles.cas({ epoch: this.roles.state.epoch + 1, primary: null })
  }

  // --accept-state-from NAME: that replica is the primary, in sync; every other is stale.
  private accepting (state: ArbiterState): ArbiterState {
    const name = this.acceptStateFrom
    if (name === undefined) return state
    if (!this.replicas.some((r) => r.name === name)) {
      throw new FtproxyError('ERR_FTPROXY_NO_REPLICA', `--accept-state-from: no replica ${name}`)
    }
    const stale = this.replicas.filter((r) => r.name !== name).map((r) => r.name)
    const incarnations = { ...state.incarnations }
    delete incarnations[name] // whatever runs there now is what the operator vouches for
    this.logger.warn('state_accepted', { replica: name, stale, previous: state })
    return { ...state, primary: name, stale, incarnations }
  }

  /**
   * A replica whose server is not the process the state vouched for lost its state: it is
   * stale. If every one did, nothing may serve (ERR_FTPROXY_STATE_LOST) until an operator
   * vouches for one (--accept-state-from).
   */
  private async checkIncarnations (): Promise<void> {
    const recorded = this.roles.incarnations
    const tellable = (r: Replica): boolean =>
      !r.viaAgent && !r.supervisor && this.cfg.protocol === 'resp'
    const now = await Promise.all(this.replicas.map(async (r) => ({
      name: r.name,
      stale: r.role === 'stale',
      now: r.role === 'down'
        ? null
        : await readAtStart(() => this.identityOf(r), recorded[r.name], tellable(r),
          this.cfg.timeouts.connect),
    })))
    const check = checkAtStart(now, recorded)
    for (const s of check.stale) {
      this.logger.error('replica_restarted', { replica: s.name, recorded: s.was, now: s.now })
    }
    if (check.lost && check.stale.some((s) => s.now === UNREADABLE)) {
      throw new FtproxyError('ERR_FTPROXY_STATE', 'no replica could be shown to be the server ' +
        `the state vouched for: ${check.stale.map((s) => `${s.name} (now ${s.now})`).join(', ')}` +
        '; start again once they answer INFO server', { replicas: check.stale })
    }
    if (check.lost) {
      const what = check.stale.map((s) => `${s.name} (was ${s.was}, now ${s.now})`).join(', ')
      throw new FtproxyError('ERR_FTPROXY_STATE_LOST',
        `every replica's server restarted since the state was recorded: ${what}; none holds ` +
        'the data any more. If one does, start with --accept-state-from NAME',
        { replicas: check.stale })
    }
    this.roles.restarted(check.stale.map((s) => s.name))
    for (const n of now) {
      if (n.now !== null && !n.stale && !check.stale.some((s) => s.name === n.name)) {
        recorded[n.name] = n.now
      }
    }
  }

  // Each client costs about 1 + replicas descriptors (its socket and one per replica): a
  // max_connections the open-files limit cannot hold is lowered, loudly, so that the front
  // rejects clients at the limit instead of failing connects to healthy replicas.
  private connectionLimit (): number {
    const configured = this.cfg.limits.max_connections
    const nofile = fdLimit()
    if (nofile === null || !Number.isFinite(nofile)) return configured
    const n = this.replicas.length
    const fits = fdBudget(nofile, n, FD_RESERVE + 4 * n)
    if (fits === 0) {
      throw new FtproxyError('ERR_FTPROXY_CONFIG', 'limits.max_connections: the open-files ' +
        `limit (${nofile}) leaves no room for a single client; raise it (LimitNOFILE=, ulimit -n)`)
    }
    if (configured <= fits) return configured
    this.logger.warn('max_connections_lowered', {
      configured, effective: fits, nofile, per_client: 1 + n, reserve: FD_RESERVE + 4 * n,
    })
    return fits
  }

  private async stopReplicas (): Promise<void> {
    await Promise.all(this.replicas.map((r) => r.supervisor?.stop()))
  }

  // Serving stopped (roles decided it): no listener, no clients, no checks, no transports.
  private stop (): void {
    this.server?.close()
    this.conns.destroyAll()
    this.teardown()
  }

  private teardown (): void {
    this.reseeder.stop()
    clearInterval(this.stallTimer)
    clearInterval(this.pausedProbeTimer)
    clearInterval(this.budgetTimer)
    for (const r of this.replicas) {
      r.health.stop()
      r.detach()
    }
  }

  // ---- clients ----------------------------------------------------------------------------

  private async listen (): Promise<void> {
    const server = net.createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: false })
    this.server = server
    server.on('connection', (socket) => this.onConnection(socket))
    await listen(server, { host: this.cfg.listen.host, port: this.cfg.listen.port })
    server.on('error', (err) => this.logger.error('listener_error', { error: err.message }))
    const a = server.address() as net.AddressInfo
    this.bound = { host: a.address, port: a.port }
    this.logger.info('listening', {
      address: formatHostPort(this.bound),
      epoch: this.roles.state.epoch,
      primary: this.roles.primary.name,
      output_commit: this.cfg.output_commit,
      protocol: this.cfg.protocol,
    })
    this.emit('listening', this.bound)
  }

  private onConnection (socket: net.Socket): void {
    if (!this.lifecycle.active) {
      socket.destroy()
      return
    }
    if (this.roles.holding) {
      socket.pause()
      this.parked.push(socket)
      return
    }
    const max = this.maxConnections
    const remote = `${socket.remoteAddress}:${socket.remotePort}`
    if (this.conns.size >= max) {
      this.counters.connections_rejected++
      this.logger.warn('connection_rejected', { reason: 'max_connections', limit: max, remote })
      socket.destroy()
      return
    }
    this.counters.connections_total++
    const c = this.conns.open(socket)
    this.logger.debug('connection_open', { conn: c.id, remote })
    socket.on('data', (data: Buffer) => c.onData(data))
    socket.on('end', () => c.onEnd())
    socket.on('drain', () => c.onDrain())
    socket.on('error', (err) => {
      this.logger.debug('client_error', { conn: c.id, error: err.message })
    })
    socket.on('close', () => c.onClose())
    c.append('OPEN')
  }

  // A switchover holds input: no client is read, new ones are parked.
  private hold (): void {
    this.conns.pauseAll()
  }

  private release (): void {
    const parked = this.parked
    this.parked = []
    this.conns.resumeAll()
    for (const s of parked) {
      this.onConnection(s)
      s.resume()
    }
  }
}
