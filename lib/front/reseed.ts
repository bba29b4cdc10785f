// Re-protection: a replica that is alive but not in sync (its server restarted, it diverged,
// it came back after being down) is re-seeded from one that is, and joins as a backup.
//
//   stale ──▶ seeding: reseed.command prepares (service runs) ──`ready`──▶ cut (Roles.cut:
//   input held, copy finished, recorded, attached) ──▶ backup
//                └── failure or timeout ──▶ stale; retried after 10 s, doubling to 10 min
//
// One re-seed at a time. With reseed.auto, every stale replica whose health check answers
// is re-seeded by itself (a restart, a return and a divergence all leave it stale and up);
// a replica that diverges again soon after joining waits as after a failure, so one that
// diverges all the time shows in /status (divergences, attempts) instead of flapping.

import { performance } from 'node:perf_hooks'
import type { Config, ReseedConfig } from '../config/index.js'
import { FtproxyError } from '../errors.js'
import type { Logger } from '../logger.js'
import type { FrontCounters } from './counters.js'
import type { Lifecycle } from './lifecycle.js'
import type { Replica, ReseedState } from './replica.js'
import { ReseedCommand, reseedEnv, type Peer } from './reseed-command.js'
import type { CutInfo } from './cut.js'
import type { Roles } from './roles.js'

/** The first retry's delay after a failure; it doubles per failure in a row, up to the max. */
export const RETRY_MIN_MS = 10_000
export const RETRY_MAX_MS = 600_000

/** A replica that diverges within this of joining by a re-seed counts as failing again. */
const DIVERGED_SOON_MS = 600_000

/** How often stale replicas are looked at (besides every role change). */
const TICK_MS = 1000

/** The last re-seed, as /status shows it. */
export interface LastReseed extends CutInfo {
  replica: string
  source: string
  reason: string
  at: string
  duration_ms: number
}

export interface ReseederOptions {
  config: () => Config
  replicas: readonly Replica[]
  roles: Roles
  lifecycle: Lifecycle
  log: Logger
  counters: FrontCounters
}

const refused = (message: string, reason: string): FtproxyError =>
  new FtproxyError('ERR_FTPROXY_RESEED_REFUSED', message, { reason })

const peer = (r: Replica): Peer => ({ name: r.name, address: r.cfg.address, agent: r.cfg.agent })

export function retryDelay (streak: number): number {
  return Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** Math.max(0, streak - 1))
}

/**
 * A divergence made a replica stale: one that diverges soon after joining by a re-seed
 * waits as after a failure (the streak grows); a rare one is re-seeded at once.
 */
export function noteDivergence (rs: ReseedState, now = performance.now()): void {
  rs.divergences++
  noteLeft(rs, now)
}

/**
 * A replica diverged soon after it joined by a re-seed: it is not re-seeded at once again
 * (each re-seed holds every client's input for a moment). A failure is not counted: a
 * server that crashes again and again is slowed by its supervisor's backoff, and a replica
 * killed twice a minute is re-protected each time.
 */
export function noteLeft (rs: ReseedState, now = performance.now()): void {
  if (rs.joinedAt === 0) return // never joined by a re-seed, or its leaving is counted
  const soon = now - rs.joinedAt < DIVERGED_SOON_MS
  rs.joinedAt = 0
  if (!soon) {
    rs.diverging = 0
    return
  }
  rs.diverging++
  rs.notBefore = Math.max(rs.notBefore, now + retryDelay(rs.diverging))
}

export class Reseeder {
  /** The re-seed under way. */
  running: Replica | null = null
  last: LastReseed | null = null
  private timer?: NodeJS.Timeout
  private queued = false
  /** The command of the re-seed under way. */
  private command: ReseedCommand | null = null

  constructor (private readonly o: ReseederOptions) {}

  start (): void {
    this.timer = setInterval(() => this.tick(), TICK_MS)
    this.timer.unref()
  }

  /** The front closes: no more re-seeds, and the one under way is abandoned. */
  stop (): void {
    clearInterval(this.timer)
    this.command?.kill('the front is closing')
  }

  /** Roles changed: look again soon (one look per turn of the event loop). */
  poke (): void {
    // Its target left `seeding` (its process exited): the copy is going nowhere.
    if (this.running && this.running.role !== 'seeding') this.command?.kill('target_exited')
    if (this.queued) return
    this.queued = true
    setImmediate(() => {
      this.queued = false
      this.tick()
    })
  }

  /** reseed.auto: start on the first stale replica that answers and is not backing off. */
  tick (): void {
    const cfg = this.o.config().reseed
    if (!cfg?.auto || this.running || !this.o.lifecycle.is('serving')) return
    const now = performance.now()
    // Up since it went stale (health is reset then), and a supervised one running again.
    const r = this.o.replicas.find((x) => x.role === 'stale' && x.health.state === 'up' &&
      now >= x.reseed.notBefore && (x.supervisor === undefined || x.supervisor.pid !== undefined))
    if (r) void this.run(r, cfg, 'automatic').catch(() => {})
  }

  /** POST /reseed, `ftproxy reseed NAME`: resolves once it joined, rejects with a code. */
  async request (name: string): Promise<LastReseed> {
    const cfg = this.o.config().reseed
    const r = this.o.replicas.find((x) => x.name === name)
    if (!cfg) throw refused('no reseed.command is configured', 'not_configured')
    if (!r) throw refused(`no replica named ${name}`, 'unknown_replica')
    if (this.running) throw refused(`${this.running.name} is being re-seeded`, 'busy')
    if (!this.o.lifecycle.is('serving')) {
      throw refused('a failover or switchover is under way', 'busy')
    }
    if (r.role !== 'stale') throw refused(`${name} is ${r.role}, not stale`, 'not_stale')
    if (r.health.state === 'down') throw refused(`${name} does not answer`, 'down')
    return await this.run(r, cfg, 'requested')
  }

  private async run (target: Replica, cfg: ReseedConfig, reason: string): Promise<LastReseed> {
    const roles = this.o.roles
    const source = this.source()
    this.running = target
    const rs = target.reseed
    rs.attempts++
    const t0 = performance.now()
    const deadline = t0 + cfg.timeout
    roles.setRole(target, 'seeding', `re-seed (${reason}) from ${source.name}`)
    this.o.log.info('reseed_started', { replica: target.name, source: source.name, reason })
    // The process the copy goes into: the cut checks it is still the one there.
    const since = await roles.incarnationOf(target)
    const env = reseedEnv(peer(source), peer(target), cfg.timeout)
    const spawn = (): ReseedCommand =>
      (this.command = new ReseedCommand(cfg.command, env, target.log))
    let cmd = spawn()
    const timer = setTimeout(() => cmd.kill('timeout'), cfg.timeout)
    try {
      const policy = cfg.open_connections
      let cut: CutInfo
      const opts = { deadline, holdMs: cfg.cut_timeout, policy, since }
      if (await cmd.ready) {
        cut = await roles.cut(target, source, (holdEnd) => finishBy(cmd, holdEnd), opts)
      } else {
        // It did all its work before any hold: worth nothing but a warm copy. Again, under it.
        await cmd.done
        cut = await roles.cut(target, source, (holdEnd) => {
          cmd = spawn()
          return finishBy(cmd, holdEnd)
        }, opts)
      }
      return this.succeeded(target, source, reason, cut, t0)
    } catch (err) {
      cmd.kill('aborted')
      this.failedRun(target, source, err as Error)
      throw err
    } finally {
      clearTimeout(timer)
      this.running = null
      this.command = null
      this.poke()
    }
  }

  private succeeded (target: Replica, source: Replica, reason: string, cut: CutInfo,
    t0: number): LastReseed {
    const rs = target.reseed
    rs.lastError = null
    rs.streak = 0
    rs.joinedAt = performance.now()
    this.o.counters.reseeds++
    this.o.counters.reseed_closed += cut.closed
    const duration = Math.round(performance.now() - t0)
    const last = this.last = {
      replica: target.name,
      source: source.name,
      reason,
      at: new Date().toISOString(),
      duration_ms: duration,
      ...cut,
      pause_ms: Math.round(cut.pause_ms * 100) / 100,
    }
    this.o.log.warn('reseeded', { ...last })
    return last
  }

  private failedRun (target: Replica, source: Replica, err: Error): void {
    const rs = target.reseed
    if (target.role === 'seeding') this.o.roles.setRole(target, 'stale', 're-seed failed')
    rs.failures++
    rs.streak++
    rs.lastError = err.message
    const retry = retryDelay(rs.streak)
    rs.notBefore = performance.now() + retry
    this.o.counters.reseed_failures++
    const code = (err as FtproxyError).code
    const why = (err as FtproxyError).details?.reason
    this.o.log.error('reseed_failed', {
      replica: target.name,
      source: source.name,
      error: err.message,
      code,
      reason: why,
      attempt: rs.attempts,
      retry_in_ms: this.o.config().reseed?.auto ? retry : null,
    })
  }

  // An in-sync backup rather than the primary: the copy then costs the primary nothing.
  private source (): Replica {
    const backup = this.o.replicas.find((r) =>
      r.role === 'backup' && r.transport !== null && r.health.state !== 'down')
    return backup ?? this.o.roles.primary
  }
}

// The command's cut phase: told `cut`, done by holdEnd (performance.now() ms) or stopped,
// so that clients are never held for longer than reseed.cut_timeout by a copy that hangs.
async function finishBy (cmd: ReseedCommand, holdEnd: number): Promise<void> {
  const timer = setTimeout(() => cmd.kill('cut_timeout'), holdEnd - performance.now())
  try {
    cmd.cut()
    await cmd.done
  } finally {
    clearTimeout(timer)
  }
}
