// The front: owns the client-facing socket, logs every inbound event, drives every serving
// replica with the log, and releases the primary's output by the output-commit rule.
//
//   client ──data──▶ InputLog(seq) ──apply──▶ Applier(primary) ──output──┐
//      ▲                          └──apply──▶ Applier(backup)  ──output──┤
//      └──────── write ◀── commit rule ◀── OutputStream (compare, hold) ◀┘
//
// Failure of the primary: test-and-set the next epoch on the arbiter, then promote a backup
// and splice every connection at the offset the client already has.

import { EventEmitter } from 'node:events'
import net from 'node:net'
import { performance } from 'node:perf_hooks'
import { randomBytes } from 'node:crypto'
import os from 'node:os'
import type { Config, HostPort, ReplicaConfig } from '../config.js'
import { formatHostPort } from '../config.js'
import { FtproxyError } from '../errors.js'
import type { Logger } from '../logger.js'
import { nullLogger } from '../logger.js'
import { HealthCheck, aliveAfterEnd, probe } from '../health.js'
import { Supervisor } from '../supervise.js'
import { Applier } from '../replica/applier.js'
import { AgentTransport } from '../replica/agent-transport.js'
import type { Transport } from '../replica/transport.js'
import { createArbiter, type Arbiter, type ArbiterState } from '../arbiter/index.js'
import { InputLog, type Entry, type EntryType } from './log.js'
import { OutputStream, type Mismatch } from './output.js'

export type Role = 'primary' | 'backup' | 'stale' | 'down'

export class Replica {
  role: Role = 'backup'
  transport: Transport | null = null
  supervisor?: Supervisor
  readonly health: HealthCheck
  readonly log: Logger

  /** Where it is reached: the server (direct) or its agent. */
  readonly address: HostPort

  constructor (readonly index: number, readonly cfg: ReplicaConfig, config: Config, log: Logger) {
    this.address = (cfg.agent ?? cfg.address) as HostPort
    this.log = log.child({ replica: cfg.name })
    this.health = new HealthCheck({ address: this.address, ...config.health_check })
  }

  get name (): string {
    return this.cfg.name
  }

  /** Reached through an agent: liveness comes from its heartbeats, not from TCP checks. */
  get viaAgent (): boolean {
    return this.cfg.agent !== undefined
  }

  get serving (): boolean {
    return this.role === 'primary' || this.role === 'backup'
  }
}

interface Conn {
  id: number
  socket: net.Socket
  stream: OutputStream
  /** DATA bytes logged, and acknowledged per replica: their difference is the input in flight. */
  logged: number
  acked: number[]
  /** seq of this connection's newest entry, and the newest each replica acknowledged. */
  lastSeq: number
  ackSeq: number[]
  inputPaused: boolean
  /** The client is gone (CLOSE logged): output is compared but no longer written. */
  gone: boolean
  /** The client socket wants 'drain' before more writes. */
  blocked: boolean
  ended: boolean
  /** Replica app socket still open. */
  open: boolean[]
  /** The front paused reading this replica's output for this connection. */
  paused: boolean[]
  /** Offset at which each replica's output ended (null: not yet). */
  eofAt: Array<number | null>
  /** The end is genuine: the server answered a probe after it (not a dying process's FIN). */
  eofOk: boolean[]
}

export interface ReplicaStatus {
  name: string
  role: Role
  health: string
  /** Entries handed to it and not yet acknowledged. */
  lag_entries: number
  /** Client bytes logged and not yet acknowledged by it. */
  lag_bytes: number
  pid?: number
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

export interface FrontStatus {
  epoch: number
  primary: string
  protected: boolean
  serving: boolean
  replicas: ReplicaStatus[]
  /** When protection last changed (ISO time). */
  protected_since: string
  connections: number
  log_entries: number
  log_bytes: number
  output_held_bytes: number
  last_failover: FailoverInfo | null
}

export interface FailoverInfo {
  from: string
  to: string
  epoch: number
  duration_ms: number
  reason: string
}

export interface FrontEvents {
  listening: [address: HostPort]
  failover: [info: FailoverInfo]
  /** The front can no longer serve (arbiter lost, no replica left); it closed its listener. */
  stopped: [reason: string]
  /** A role changed (a replica left or joined service, a failover, a switchover). */
  roles: []
}

export interface FrontOptions {
  log?: Logger
  /** Defaults to the backend named by config.arbiter. */
  arbiter?: Arbiter
}

export class Front extends EventEmitter<FrontEvents> {
  readonly replicas: Replica[]
  private cfg: Config
  private readonly logger: Logger
  private readonly arbiter: Arbiter
  private readonly input = new InputLog()
  private readonly conns = new Map<number, Conn>()
  /** Connections whose commit rule may have moved (acks came in): advanced once per turn. */
  private readonly dirty = new Set<Conn>()
  private server?: net.Server
  private state!: ArbiterState
  private primary!: Replica
  /** The primary the arbiter is (being) told about: moves before a failover's test-and-set. */
  private arbiterPrimary = ''
  private nextConn = 1
  private isProtected: boolean | null = null
  private serving = false
  private closing = false
  private failing = false
  /** A planned switchover holds new input: clients are not read, new ones wait here. */
  private holding: net.Socket[] | null = null
  private flushScheduled = false
  private stallTimer?: NodeJS.Timeout
  private arbiterQueue: Promise<unknown> = Promise.resolve()
  private lastFailover: FailoverInfo | null = null
  private protectedSince = new Date()
  readonly counters: FrontCounters = {
    bytes_in: 0, bytes_out: 0, log_entries: 0, connections_total: 0, connections_rejected: 0,
    failovers: 0, switchovers: 0, divergences: 0,
  }
  private bound?: HostPort
  /** This process, to agents: a new id starts a new session there. */
  private readonly frontId: string

  constructor (cfg: Config, opts: FrontOptions = {}) {
    super()
    this.cfg = cfg
    this.logger = opts.log ?? nullLogger()
    this.arbiter = opts.arbiter ?? createArbiter(cfg.arbiter, cfg.state_dir)
    this.replicas = cfg.replicas.map((r, i) => new Replica(i, r, cfg, this.logger))
    this.frontId = `${os.hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`
  }

  /** The bound client-facing address (after start). */
  get address (): HostPort {
    if (!this.bound) throw new Error('front not started')
    return this.bound
  }

  async start (): Promise<void> {
    this.state = await this.arbiter.open()
    try {
      await this.begin()
    } catch (err) {
      this.teardown()
      this.server?.close()
      await this.stopReplicas()
      await this.arbiter.close()
      throw err
    }
  }

  private async begin (): Promise<void> {
    const byName = new Map(this.replicas.map((r) => [r.name, r]))
    for (const name of [this.state.primary, ...this.state.stale]) {
      if (name !== null && !byName.has(name)) {
        throw new FtproxyError('ERR_FTPROXY_STATE', `state names replica '${name}', which is not in the config`, { replica: name })
      }
    }
    for (const r of this.replicas) r.role = this.state.stale.includes(r.name) ? 'stale' : 'backup'
    let primary = this.state.primary === null ? this.replicas.find((r) => r.role !== 'stale') : byName.get(this.state.primary)
    if (!primary || primary.role === 'stale') {
      throw new FtproxyError('ERR_FTPROXY_NO_REPLICA', 'every replica is stale: nothing can serve without losing data; ' +
        `re-seed a replica, or remove ${this.cfg.state_dir}/state.json to start over from the config`)
    }
    primary.role = 'primary'
    this.primary = primary
    this.logger.info('state_loaded', { epoch: this.state.epoch, primary: primary.name, stale: this.state.stale })

    for (const r of this.replicas) this.supervise(r)
    await this.awaitReplicas()

    if (this.primary.role !== 'primary') {
      primary = this.replicas.find((r) => r.role === 'backup')
      if (!primary) throw new FtproxyError('ERR_FTPROXY_NO_REPLICA', 'no replica is reachable')
      this.primary = primary
      this.setRole(primary, 'primary', 'startup: configured primary unreachable')
    }
    // Every front process serves in an epoch of its own: its log starts at seq 1, and agents
    // let a new front take over only with an epoch newer than the last one's.
    this.arbiterPrimary = this.primary.name
    const next = { epoch: this.state.epoch + 1, primary: this.primary.name, stale: this.state.stale, owner: '' }
    if (!await this.cas(next)) throw new FtproxyError('ERR_FTPROXY_ARBITER_LOST', 'lost the test-and-set for the first epoch')

    for (const r of this.replicas) {
      if (r.serving) this.attach(r)
      r.health.on('up', () => this.onHealthUp(r))
      r.health.on('down', (reason) => this.fail(r, reason))
      if (!r.viaAgent) r.health.start()
    }
    const stallEvery = Math.max(20, Math.min(1000, Math.floor(this.cfg.timeouts.stall / 5)))
    this.stallTimer = setInterval(() => this.checkStalls(), stallEvery)
    this.stallTimer.unref()

    await this.listen()
    this.serving = true
    this.reportProtection('startup')
  }

  status (): FrontStatus {
    let held = 0
    const lagBytes = this.replicas.map(() => 0)
    for (const c of this.conns.values()) {
      held += c.stream.held
      for (const r of this.replicas) if (r.transport) lagBytes[r.index] += c.logged - c.acked[r.index]
    }
    return {
      epoch: this.state.epoch,
      primary: this.primary.name,
      protected: this.isProtected === true,
      serving: this.serving,
      replicas: this.replicas.map((r) => ({
        name: r.name,
        role: r.role,
        health: r.health.state,
        lag_entries: r.transport?.unacked ?? 0,
        lag_bytes: lagBytes[r.index],
        pid: r.supervisor?.pid,
      })),
      protected_since: this.protectedSince.toISOString(),
      connections: this.conns.size,
      log_entries: this.input.length,
      log_bytes: this.input.bytes,
      output_held_bytes: held,
      last_failover: this.lastFailover,
    }
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
    const live = ['health_check', 'limits'] as const
    for (const key of Object.keys(next) as Array<keyof Config>) {
      if (key === 'file' || key === 'log' || same(this.cfg[key], next[key])) continue
      if ((live as readonly string[]).includes(key)) applied.push(key)
      else restart.push(key)
    }
    if (next.log.level !== this.cfg.log.level) applied.push('log.level')
    if (next.log.format !== this.cfg.log.format) restart.push('log.format')
    this.cfg = { ...this.cfg, log: { ...this.cfg.log, level: next.log.level }, health_check: next.health_check, limits: next.limits }
    this.logger.setLevel(next.log.level)
    for (const r of this.replicas) r.health.retime(next.health_check)
    this.logger.info('reload', { file: next.file, applied, restart_needed: restart })
    return { applied, restart }
  }

  /**
   * Planned switchover with zero loss: hold new input, wait until backup `target` (default:
   * the first backup) has every entry and has produced exactly the primary's output on every
   * connection, move the epoch through the arbiter, swap roles (the old primary stays in
   * sync, as a backup), resume. Refused with ERR_FTPROXY_NOT_IN_SYNC when no backup gets in
   * sync within timeouts.stall; input resumes either way.
   */
  async switchover (target?: string): Promise<FailoverInfo> {
    const to = target === undefined ? this.replicas.find((r) => r.role === 'backup') : this.replicas.find((r) => r.name === target)
    if (!this.serving || this.failing || this.holding) {
      throw new FtproxyError('ERR_FTPROXY_NOT_IN_SYNC', 'a failover or switchover is already under way')
    }
    if (!to || to.role !== 'backup') {
      throw new FtproxyError('ERR_FTPROXY_NOT_IN_SYNC', target === undefined ? 'no backup to switch to' : `${target} is not a backup in service`)
    }
    const t0 = performance.now()
    const from = this.primary
    this.holding = []
    for (const c of this.conns.values()) c.socket.pause()
    try {
      const deadline = t0 + this.cfg.timeouts.stall
      const intervened = (): boolean => this.failing || !this.serving || to.role !== 'backup' || this.primary !== from
      while (!this.inSync()) {
        if (performance.now() > deadline || intervened()) {
          throw new FtproxyError('ERR_FTPROXY_NOT_IN_SYNC', `${to.name} did not get in sync within ${this.cfg.timeouts.stall}ms`)
        }
        await new Promise((resolve) => setTimeout(resolve, 2))
      }
      const epoch = this.state.epoch + 1
      this.arbiterPrimary = to.name
      if (!await this.cas({ epoch, primary: to.name, stale: this.staleNames(), owner: '' })) {
        this.arbiterPrimary = from.name
        this.stopServing(`lost the arbiter's test-and-set for epoch ${epoch} (switchover)`)
        throw new FtproxyError('ERR_FTPROXY_ARBITER_LOST', `lost the test-and-set for epoch ${epoch}`)
      }
      if (intervened()) {
        // A failure came in during the test-and-set: the failover in flight (or the next
        // one) decides. Put back the primary the arbiter should name if nothing else will.
        if (!this.failing && this.primary === from) {
          this.arbiterPrimary = from.name
          void this.cas({ epoch: this.state.epoch + 1, primary: null, stale: [], owner: '' })
        }
        throw new FtproxyError('ERR_FTPROXY_NOT_IN_SYNC', `a failure during the switchover to ${to.name}; the failover rules apply`)
      }
      const now = performance.now()
      for (const c of this.conns.values()) {
        // In sync, input held: only output a server sends unasked can get in between; such
        // a connection is spliced as a failover would (the old primary leaves it).
        if (!c.stream.swap(to.index, now)) {
          this.logger.warn('switchover_splice', { conn: c.id })
          this.mismatches(c, c.stream.promote(to.index, c.lastSeq, now))
        }
        this.resumeReplica(c, from)
      }
      this.primary = to
      this.setRole(to, 'primary', `switchover from ${from.name}`)
      this.setRole(from, 'backup', `switchover to ${to.name}`)
      const info: FailoverInfo = { from: from.name, to: to.name, epoch, duration_ms: Math.round((performance.now() - t0) * 100) / 100, reason: 'switchover' }
      this.lastFailover = info
      this.counters.switchovers++
      this.logger.warn('switchover', { ...info })
      this.emit('failover', info)
      return info
    } finally {
      const parked = this.holding
      this.holding = null
      for (const c of this.conns.values()) if (!c.inputPaused) c.socket.resume()
      for (const s of parked) {
        this.onConnection(s)
        s.resume()
      }
      this.afterProgress()
    }
  }

  // Every entry acknowledged by every serving replica, every output produced by all alike.
  private inSync (): boolean {
    if (this.input.length > 0) return false
    for (const c of this.conns.values()) {
      if (!c.stream.inSync) return false
      const ends = this.replicas.filter((r) => r.serving).map((r) => c.eofAt[r.index])
      if (ends.some((e) => e !== ends[0])) return false
    }
    return true
  }

  /** Stop accepting, let released output drain (bounded by timeouts.linger), stop everything. */
  async close (): Promise<void> {
    if (this.closing) return
    this.closing = true
    this.serving = false
    const closed = this.server ? new Promise<void>((resolve) => this.server?.close(() => resolve())) : Promise.resolve()
    const deadline = performance.now() + this.cfg.timeouts.linger
    while (performance.now() < deadline && this.undrained()) await new Promise((resolve) => setTimeout(resolve, 10))
    for (const c of this.conns.values()) c.socket.destroy()
    await closed
    this.teardown()
    await this.stopReplicas()
    await this.arbiterQueue.catch(() => {})
    await this.arbiter.close()
    this.logger.info('shutdown', {})
  }

  // ---- replicas ---------------------------------------------------------------------------

  /** The one place a role changes. */
  private setRole (r: Replica, role: Role, reason: string): void {
    if (r.role === role) return
    this.logger.info('replica_role', { replica: r.name, from: r.role, to: role, reason })
    r.role = role
    this.emit('roles')
  }

  private supervise (r: Replica): void {
    const command = this.cfg.replicas[r.index].command
    if (!command) return
    r.supervisor = new Supervisor({ name: r.name, command, log: this.logger, stopTimeoutMs: this.cfg.timeouts.linger })
    r.supervisor.on('exit', (code, signal) => {
      if (this.closing) return
      this.fail(r, `process exited (code ${code}, signal ${signal})`)
      if (r.role === 'stale') r.log.warn('replica_stale_restart', { note: 'restarted server lost its state; it will not serve until re-seeded' })
    })
    r.supervisor.start()
  }

  private async stopReplicas (): Promise<void> {
    await Promise.all(this.replicas.map((r) => r.supervisor?.stop()))
  }

  // Wait (bounded) until every replica that may serve accepts connections.
  private async awaitReplicas (): Promise<void> {
    const deadline = performance.now() + Math.max(5000, this.cfg.timeouts.connect * 3)
    await Promise.all(this.replicas.filter((r) => r.serving).map(async (r) => {
      let err: Error | null = null
      do {
        err = await probe(r.address, this.cfg.health_check.timeout)
        if (!err) {
          this.logger.info('replica_up', { replica: r.name })
          r.health.state = 'up'
          return
        }
        await new Promise((resolve) => setTimeout(resolve, 50))
      } while (performance.now() < deadline)
      this.logger.warn('replica_down', { replica: r.name, reason: `unreachable at startup: ${(err as NodeJS.ErrnoException).code ?? err.message}` })
      r.health.state = 'down'
      this.setRole(r, 'down', 'unreachable at startup')
    }))
  }

  private attach (r: Replica): void {
    const { timeouts, health_check: hc, limits } = this.cfg
    const a: Transport = r.cfg.agent
      ? new AgentTransport({
        address: r.cfg.agent,
        tls: r.cfg.tls,
        frontId: this.frontId,
        epoch: () => this.state.epoch,
        window: limits.max_lag,
        interval: hc.interval,
        heartbeat: timeouts.heartbeat,
        connectTimeout: timeouts.connect,
        log: r.log,
      })
      : new Applier({ address: r.address, connectTimeout: timeouts.connect, linger: timeouts.linger })
    r.transport = a
    a.on('ack', (entry) => this.onAck(r, entry))
    a.on('output', (conn, data) => this.onOutput(r, conn, data))
    a.on('output_end', (conn, err) => this.onOutputEnd(r, conn, err))
    a.on('closed', (conn) => {
      const c = this.conns.get(conn)
      if (c) { c.open[r.index] = false; this.maybeForget(c) }
    })
    a.on('failed', (err) => {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ERR_FTPROXY_FENCED') this.logger.error('fenced', { replica: r.name, error: err.message })
      if (r.viaAgent) r.health.state = 'down'
      this.fail(r, r.viaAgent ? `agent: ${err.message}` : `connect: ${code ?? err.message}`)
    })
  }

  private onHealthUp (r: Replica): void {
    this.logger.info('replica_up', { replica: r.name })
    // A replica that was down before any input was logged missed nothing: it may back up.
    if (r.role === 'down' && this.input.lastSeq === 0 && this.serving) {
      this.setRole(r, 'backup', 'reachable before any input')
      this.attach(r)
      this.reportProtection('backup joined')
    }
  }

  /** A replica failed: the primary is replaced, a backup is retired. */
  private fail (r: Replica, reason: string): void {
    if (!r.serving || this.closing || !this.serving) return
    this.logger.warn('replica_down', { replica: r.name, reason, role: r.role })
    if (r === this.primary) void this.failover(reason, performance.now())
    else this.retire(r, 'stale', reason)
  }

  /** Take a backup out of service: it missed (or will miss) inputs, so it is stale. */
  private retire (r: Replica, role: 'stale' | 'down', reason: string): void {
    r.transport?.close()
    r.transport = null
    // Before any input was logged nothing was missed: the replica is only down.
    this.setRole(r, role === 'stale' && this.input.lastSeq > 0 ? 'stale' : 'down', reason)
    for (const c of this.conns.values()) {
      c.stream.drop(r.index)
      c.open[r.index] = false
      this.input.release(c.id, this.ackedByAll(c))
      this.maybeForget(c)
    }
    if (r.role === 'stale') void this.persistStale()
    this.reportProtection(`${r.name}: ${reason}`)
    this.afterProgress()
  }

  private async failover (reason: string, detectedAt: number): Promise<void> {
    if (this.failing) return
    this.failing = true
    const old = this.primary
    old.transport?.close()
    old.transport = null
    this.setRole(old, this.input.lastSeq > 0 ? 'stale' : 'down', reason)
    const to = this.replicas.find((r) => r.role === 'backup' && r.health.state !== 'down' && r.transport)
    if (!to) {
      await this.persistStale()
      this.failing = false
      return this.stopServing(`primary ${old.name} failed (${reason}) and no backup can take over`)
    }
    const epoch = this.state.epoch + 1
    this.arbiterPrimary = to.name
    const won = await this.cas({ epoch, primary: to.name, stale: this.staleNames(), owner: '' })
    if (!won) {
      this.failing = false
      return this.stopServing(`lost the arbiter's test-and-set for epoch ${epoch}`)
    }
    this.primary = to
    if (!to.serving) {
      // It failed while the test-and-set was in flight: go on to the next backup.
      this.failing = false
      return this.failover(`${reason}; then ${to.name} failed`, detectedAt)
    }
    this.setRole(to, 'primary', `failover from ${old.name}`)
    const now = performance.now()
    for (const c of [...this.conns.values()]) {
      if (c.stream.primary !== to.index) this.mismatches(c, c.stream.promote(to.index, c.lastSeq, now))
      this.resumeReplica(c, to)
    }
    const info: FailoverInfo = { from: old.name, to: to.name, epoch, duration_ms: Math.round((performance.now() - detectedAt) * 100) / 100, reason }
    this.lastFailover = info
    this.counters.failovers++
    this.logger.warn('failover', { ...info })
    this.failing = false
    this.emit('failover', info)
    this.reportProtection(`failover from ${old.name}`)
    this.afterProgress()
  }

  private stopServing (reason: string): void {
    if (!this.serving) return
    this.serving = false
    this.logger.error('serving_stopped', { reason })
    this.server?.close()
    for (const c of this.conns.values()) c.socket.destroy()
    this.teardown()
    this.emit('stopped', reason)
  }

  private teardown (): void {
    clearInterval(this.stallTimer)
    for (const r of this.replicas) {
      r.health.stop()
      r.transport?.close()
      r.transport = null
    }
  }

  private staleNames (): string[] {
    return this.replicas.filter((r) => r.role === 'stale').map((r) => r.name)
  }

  private persistStale (): Promise<void> {
    const stale = this.staleNames()
    if (stale.length === this.state.stale.length && stale.every((n) => this.state.stale.includes(n))) return Promise.resolve()
    return this.cas({ epoch: this.state.epoch + 1, primary: null, stale, owner: '' }).then((won) => {
      if (!won) this.stopServing('lost the arbiter\'s test-and-set while recording stale replicas')
    })
  }

  // Test-and-set through the arbiter, one at a time. Epoch and stale set are computed when it
  // runs; so is the primary when `next.primary` is null (a queued record of stale replicas
  // must not name a primary that a failover moved meanwhile).
  private cas (next: ArbiterState): Promise<boolean> {
    const run = async (): Promise<boolean> => {
      const expect = this.state.epoch
      const primary = next.primary ?? this.arbiterPrimary
      const want = { ...next, primary, epoch: Math.max(next.epoch, expect + 1), stale: this.staleNames() }
      try {
        const won = await this.arbiter.compareAndSet(expect, want)
        if (won) this.state = want
        else this.logger.error('arbiter_lost', { epoch: want.epoch })
        return won
      } catch (err) {
        this.logger.error('arbiter_error', { error: (err as Error).message, code: (err as FtproxyError).code })
        return false
      }
    }
    const p = this.arbiterQueue.then(run, run)
    this.arbiterQueue = p
    return p
  }

  private reportProtection (reason: string): void {
    const backups = this.replicas.filter((r) => r.role === 'backup').map((r) => r.name)
    const now = backups.length > 0
    if (now === this.isProtected) return
    this.isProtected = now
    this.protectedSince = new Date()
    if (now) this.logger.info('protected', { backups })
    else this.logger.warn('unprotected', { reason, on_backup_loss: this.cfg.on_backup_loss })
  }

  private checkStalls (): void {
    const now = performance.now()
    const stalled = new Set<number>()
    for (const c of this.conns.values()) for (const r of c.stream.stalled(now, this.cfg.timeouts.stall)) stalled.add(r)
    for (const i of stalled) this.fail(this.replicas[i], `stall: owes output that another replica produced more than ${this.cfg.timeouts.stall}ms ago`)
  }

  // ---- clients ----------------------------------------------------------------------------

  private listen (): Promise<void> {
    return new Promise((resolve, reject) => {
      const server = net.createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: false })
      this.server = server
      server.on('connection', (socket) => this.onConnection(socket))
      server.once('error', reject)
      server.listen({ host: this.cfg.listen.host, port: this.cfg.listen.port }, () => {
        server.off('error', reject)
        server.on('error', (err) => this.logger.error('listener_error', { error: err.message }))
        const a = server.address() as net.AddressInfo
        this.bound = { host: a.address, port: a.port }
        this.logger.info('listening', { address: formatHostPort(this.bound), epoch: this.state.epoch, primary: this.primary.name, output_commit: this.cfg.output_commit })
        this.emit('listening', this.bound)
        resolve()
      })
    })
  }

  private onConnection (socket: net.Socket): void {
    if (!this.serving) return void socket.destroy()
    if (this.holding) {
      socket.pause()
      this.holding.push(socket)
      return
    }
    if (this.conns.size >= this.cfg.limits.max_connections) {
      this.counters.connections_rejected++
      this.logger.warn('connection_rejected', { reason: 'max_connections', limit: this.cfg.limits.max_connections, remote: `${socket.remoteAddress}:${socket.remotePort}` })
      return void socket.destroy()
    }
    const n = this.replicas.length
    this.counters.connections_total++
    const c: Conn = {
      id: this.nextConn++,
      socket,
      stream: new OutputStream(this.replicas.map((r) => r.serving), this.primary.index),
      logged: 0,
      acked: new Array<number>(n).fill(0),
      lastSeq: 0,
      ackSeq: new Array<number>(n).fill(0),
      inputPaused: false,
      gone: false,
      blocked: false,
      ended: false,
      open: this.replicas.map((r) => r.serving),
      paused: new Array<boolean>(n).fill(false),
      eofAt: new Array<number | null>(n).fill(null),
      eofOk: new Array<boolean>(n).fill(false),
    }
    this.conns.set(c.id, c)
    this.logger.debug('connection_open', { conn: c.id, remote: `${socket.remoteAddress}:${socket.remotePort}` })
    socket.on('data', (data: Buffer) => this.onClientData(c, data))
    socket.on('end', () => this.append('EOF', c))
    socket.on('drain', () => { c.blocked = false; this.advance(c) })
    socket.on('error', (err) => this.logger.debug('client_error', { conn: c.id, error: err.message }))
    socket.on('close', () => this.onClientClose(c))
    this.append('OPEN', c)
  }

  private onClientData (c: Conn, data: Buffer): void {
    this.counters.bytes_in += data.length
    this.append('DATA', c, data)
    c.logged += data.length
    if (!c.inputPaused && this.inflight(c) > this.cfg.limits.max_lag) {
      c.inputPaused = true
      c.socket.pause()
    }
  }

  private onClientClose (c: Conn): void {
    c.gone = true
    this.append('CLOSE', c)
    this.logger.debug('connection_closed', { conn: c.id })
    this.maybeForget(c)
  }

  private append (type: EntryType, c: Conn, data?: Buffer): void {
    if (!this.serving && type === 'OPEN') return
    const entry = this.input.append(type, c.id, data)
    this.counters.log_entries++
    c.lastSeq = entry.seq
    for (const r of this.replicas) r.transport?.apply(entry)
  }

  // Input not yet acknowledged by every serving replica.
  private inflight (c: Conn): number {
    let min = c.logged
    for (const r of this.replicas) if (r.transport) min = Math.min(min, c.acked[r.index])
    return c.logged - min
  }

  private maybeForget (c: Conn): void {
    if (!c.gone || c.open.some((o, i) => o && this.replicas[i].serving)) return
    this.conns.delete(c.id)
    this.dirty.delete(c)
    this.input.forget(c.id)
  }

  // ---- replica events ---------------------------------------------------------------------

  private onAck (r: Replica, e: Entry): void {
    const c = this.conns.get(e.conn)
    if (!c) return
    c.ackSeq[r.index] = e.seq
    if (e.data) {
      c.acked[r.index] += e.data.length
      if (c.inputPaused && this.inflight(c) <= this.cfg.limits.max_lag / 2) this.resumeInput(c)
    }
    this.input.release(c.id, this.ackedByAll(c))
    if (r.role === 'backup' && this.cfg.output_commit === 'ack') this.markDirty(c)
  }

  // The newest seq of this connection that every serving replica acknowledged.
  private ackedByAll (c: Conn): number {
    let min = c.lastSeq
    for (const r of this.replicas) if (r.transport) min = Math.min(min, c.ackSeq[r.index])
    return min
  }

  private onOutput (r: Replica, conn: number, data: Buffer): void {
    const c = this.conns.get(conn)
    if (!c || !r.serving) return
    const s = c.stream
    const isPrimary = r === this.primary
    if (!s.live[r.index]) return // dropped on this connection (a failed splice)
    const pEof = c.eofAt[this.primary.index]
    if (!isPrimary && !c.gone && pEof !== null && c.eofOk[this.primary.index] && s.produced[r.index] + data.length > pEof) {
      return this.diverged(r, c, pEof, Buffer.alloc(0), data.subarray(0, 16), 'output after the primary closed')
    }
    // ack mode: these bytes may depend on every input of this connection logged so far.
    this.mismatches(c, s.push(r.index, data, isPrimary ? c.lastSeq : 0, performance.now()))
    this.checkEnds(c)
    this.advance(c)
  }

  private onOutputEnd (r: Replica, conn: number, err: Error | null): void {
    const c = this.conns.get(conn)
    if (!c || !r.serving || c.gone) return
    const at = c.eofAt[r.index] = c.stream.produced[r.index]
    if (err) r.log.debug('app_socket_error', { conn, error: err.message })
    this.checkEnds(c)
    if (c.eofOk[r.index] || r.transport?.endsConfirmed || this.replicas.some((o) => o !== r && o.serving && c.eofAt[o.index] === at && !err)) {
      // Another replica ended at the same offset: the end is the servers' own, no probe needed.
      c.eofOk[r.index] = true
      return this.advance(c)
    }
    // A dying server's sockets end too: believe an end only once the server still answers.
    void aliveAfterEnd(r.health, () => r.serving).then((ok) => {
      if (!ok || !r.serving) return
      c.eofOk[r.index] = true
      this.checkEnds(c)
      this.advance(c)
    })
    this.checkEnds(c)
    this.advance(c)
  }

  // A replica whose output ended where the primary's goes on (or the reverse) has diverged.
  // Once the client is gone the front itself ends the app sockets (linger), at whatever
  // offset each server had reached, so ends prove nothing then; bytes are still compared.
  private checkEnds (c: Conn): void {
    if (c.gone) return
    const p = this.primary.index
    const pEnd = c.eofAt[p]
    for (const r of this.replicas) {
      if (r.role !== 'backup') continue
      const end = c.eofAt[r.index]
      if (end !== null && pEnd !== null && end === pEnd) {
        // Both ended at the same offset: each confirms the other.
        c.eofOk[p] = c.eofOk[r.index] = true
      } else if (end !== null && c.eofOk[r.index] && (c.stream.end > end || (pEnd !== null && c.eofOk[p]))) {
        this.diverged(r, c, end, Buffer.alloc(0), Buffer.alloc(0), 'output ended at a different offset')
      }
    }
  }

  private mismatches (c: Conn, found: Mismatch[]): void {
    for (const m of found) {
      const r = this.replicas[m.replica]
      if (r === this.primary) {
        // The new primary's bytes differ from what the client already has: cannot splice.
        this.logger.error('splice_failed', { conn: c.id, replica: r.name, offset: m.offset, released: m.expected.toString('hex'), replica_bytes: m.actual.toString('hex') })
        c.stream.drop(r.index)
        c.gone = true
        c.socket.destroy()
      } else {
        this.diverged(r, c, m.offset, m.expected, m.actual, 'bytes differ')
      }
    }
  }

  private diverged (r: Replica, c: Conn, offset: number, primary: Buffer, backup: Buffer, what: string): void {
    if (!r.serving) return
    this.counters.divergences++
    this.logger.error('divergence', { replica: r.name, conn: c.id, offset, what, primary_hex: primary.toString('hex'), backup_hex: backup.toString('hex') })
    this.retire(r, 'stale', `divergence on conn ${c.id} at offset ${offset}`)
  }

  // ---- output commit ----------------------------------------------------------------------

  // Acks arrive one entry at a time: advance each touched connection once per turn.
  private markDirty (c: Conn): void {
    this.dirty.add(c)
    if (this.flushScheduled) return
    this.flushScheduled = true
    setImmediate(() => {
      this.flushScheduled = false
      const cs = [...this.dirty]
      this.dirty.clear()
      for (const c of cs) this.advance(c)
    })
  }

  // Everything that may have moved after a replica left or a primary changed: commit,
  // backpressure on replicas (a paused primary may be free now) and on clients.
  private afterProgress (): void {
    for (const c of [...this.conns.values()]) {
      if (c.inputPaused && this.inflight(c) <= this.cfg.limits.max_lag / 2) this.resumeInput(c)
      this.advance(c)
    }
  }

  /** Called with the seconds each release waited for the commit rule (set by the admin endpoint). */
  onCommitWait?: (seconds: number) => void

  /** Apply the commit rule to one connection, write what it releases, apply backpressure. */
  private advance (c: Conn): void {
    const s = c.stream
    const waiting = this.onCommitWait && s.uncommittedSince
    const before = s.committed
    if (!this.isProtected) {
      if (this.cfg.on_backup_loss === 'continue') s.commitTo(s.end)
    } else if (this.cfg.output_commit === 'none') {
      s.commitTo(s.end)
    } else if (this.cfg.output_commit === 'ack') {
      let seq = Infinity
      for (const r of this.replicas) if (r.role === 'backup' && r.transport) seq = Math.min(seq, c.ackSeq[r.index])
      s.commitAcked(seq)
    } else {
      s.commitTo(s.matchedByBackups())
    }
    if (waiting !== undefined && s.committed > before) this.onCommitWait?.((performance.now() - waiting) / 1000)
    if (c.gone || c.ended) {
      s.take()
    } else if (!c.blocked && s.committed > s.written) {
      for (const buf of s.take()) {
        this.counters.bytes_out += buf.length
        c.blocked = !c.socket.write(buf)
      }
    } else {
      s.trim()
    }
    this.pressure(c)
    const p = this.primary.index
    const pEnd = c.eofAt[p]
    if (!c.ended && !c.gone && pEnd !== null && c.eofOk[p] && s.written === pEnd) {
      c.ended = true
      c.socket.end()
    }
  }

  // Pause a replica's output on this connection while its unconfirmed bytes exceed max_lag.
  private pressure (c: Conn): void {
    const max = this.cfg.limits.max_lag
    for (const r of this.replicas) {
      if (!r.transport) continue
      const over = r === this.primary ? c.stream.held > max : c.stream.aheadBytes[r.index] > max
      if (over && !c.paused[r.index]) {
        c.paused[r.index] = true
        c.stream.suspend(r.index, true, performance.now())
        r.transport.pause(c.id)
      } else if (!over && c.paused[r.index]) {
        this.resumeReplica(c, r)
      }
    }
  }

  // A switchover's hold keeps every client unread; it resumes them itself when it ends.
  private resumeInput (c: Conn): void {
    c.inputPaused = false
    if (!this.holding) c.socket.resume()
  }

  private resumeReplica (c: Conn, r: Replica): void {
    if (!c.paused[r.index]) return
    c.paused[r.index] = false
    c.stream.suspend(r.index, false, performance.now())
    r.transport?.resume(c.id)
  }

  private undrained (): boolean {
    for (const c of this.conns.values()) {
      if (!c.gone && (c.stream.committed > c.stream.written || c.socket.writableLength > 0)) return true
    }
    return false
  }
}
