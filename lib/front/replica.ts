// One replica as the front sees it: where it is reached, its role, the transport that feeds
// it the log, the supervisor of its process (if the front runs it) and its health check.

import path from 'node:path'
import { formatHostPort, type HostPort } from '../address.js'
import type { Config, ReplicaConfig } from '../config/index.js'
import { HealthCheck } from '../health.js'
import type { Logger } from '../logger.js'
import { Applier } from '../replica/applier.js'
import { AgentTransport } from '../replica/agent-transport.js'
import { protocolFor } from '../protocol/index.js'
import type { Transport } from '../replica/transport.js'
import { Supervisor } from '../supervise.js'

export type Role = 'primary' | 'backup' | 'seeding' | 'stale' | 'down'

/** Its re-seeds so far (front/reseed.ts), as /status shows them. */
export interface ReseedState {
  /** Re-seeds started, and of them those that failed. */
  attempts: number
  failures: number
  /** Failures in a row: the next automatic attempt waits 10 s doubling per failure. */
  streak: number
  /** Divergences in a row, each soon after a re-seed: they back off the same way. */
  diverging: number
  /** Divergences found on it (each makes it stale; with reseed.auto, re-seeded). */
  divergences: number
  /** Not before this (performance.now() ms): a backoff after failures or divergences. */
  notBefore: number
  /** When it last joined by a re-seed (performance.now() ms), 0 never. */
  joinedAt: number
  lastError: string | null
}

/** No re-seed yet. */
export function newReseedState (): ReseedState {
  return {
    attempts: 0,
    failures: 0,
    streak: 0,
    diverging: 0,
    divergences: 0,
    notBefore: 0,
    joinedAt: 0,
    lastError: null,
  }
}

export class Replica {
  role: Role = 'backup'
  transport: Transport | null = null
  readonly reseed: ReseedState = newReseedState()

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

  /** Close the transport, if any: no event comes from it after. */
  detach (): void {
    this.transport?.close()
    this.transport = null
    this.health.prober = null
  }

  /** Start the configured command under a supervisor (nothing without one). */
  supervise (config: Config, log: Logger, onExit: (why: string) => void): void {
    const command = this.cfg.command
    if (!command) return
    const stopTimeoutMs = config.timeouts.linger
    // The record lets the next front adopt the server if this one dies (a crash, not close()).
    const record = path.join(config.state_dir, 'servers', `${this.name}.json`)
    const address = this.cfg.address ? formatHostPort(this.cfg.address) : undefined
    this.supervisor = new Supervisor({
      name: this.name, command, log, stopTimeoutMs, record, address,
    })
    this.supervisor.on('exit', (code, signal) => {
      onExit(`process exited (code ${code}, signal ${signal})`)
    })
    this.supervisor.start()
  }
}

/**
 * Builds the transport that feeds a replica the log (a seam: tests pass fakes). `joined`: it
 * starts in the middle of the log (a re-seed's cut), as a session of its own.
 */
export type TransportFactory = (r: Replica, joined?: boolean) => Transport

/** Direct replicas get an Applier, agent replicas the log channel. */
export function transportFactory (
  config: () => Config, frontId: string, epoch: () => number,
  vouched: (r: Replica) => string | undefined
): TransportFactory {
  let joins = 0
  return (r, joined = false) => {
    const { timeouts, health_check: hc, limits, protocol: name } = config()
    const protocol = protocolFor(name)
    if (!r.cfg.agent) {
      const { connect: connectTimeout, linger } = timeouts
      const holdBytes = limits.max_lag
      // The Redis the state vouches for (recorded just before any attach): its control
      // connection must find that run_id, or the server restarted since it was read.
      const identity = /^redis:(.+)$/.exec(vouched(r) ?? '')?.[1] ?? null
      return new Applier({
        address: r.address, connectTimeout, linger, protocol, holdBytes, identity,
      })
    }
    return new AgentTransport({
      address: r.cfg.agent,
      tls: r.cfg.tls,
      // An agent resumes the session of the same front id: a joined replica starts anew.
      frontId: joined ? `${frontId}/join-${++joins}` : frontId,
      epoch,
      window: limits.max_lag,
      protocol: name,
      interval: hc.interval,
      heartbeat: timeouts.heartbeat,
      connectTimeout: timeouts.connect,
      log: r.log,
    })
  }
}
