// One replica as the front sees it: where it is reached, its role, the transport that feeds
// it the log, the supervisor of its process (if the front runs it) and its health check.

import type { HostPort } from '../address.js'
import type { Config, ReplicaConfig } from '../config/index.js'
import { HealthCheck } from '../health.js'
import type { Logger } from '../logger.js'
import { Applier } from '../replica/applier.js'
import { AgentTransport } from '../replica/agent-transport.js'
import { protocolFor } from '../protocol/index.js'
import type { Transport } from '../replica/transport.js'
import { Supervisor } from '../supervise.js'

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
    this.supervisor = new Supervisor({ name: this.name, command, log, stopTimeoutMs })
    this.supervisor.on('exit', (code, signal) => {
      onExit(`process exited (code ${code}, signal ${signal})`)
    })
    this.supervisor.start()
  }
}

/** Builds the transport that feeds a replica the log (a seam: tests pass fakes). */
export type TransportFactory = (r: Replica) => Transport

/** Direct replicas get an Applier, agent replicas the log channel. */
export function transportFactory (
  config: () => Config, frontId: string, epoch: () => number
): TransportFactory {
  return (r) => {
    const { timeouts, health_check: hc, limits, protocol: name } = config()
    const protocol = protocolFor(name)
    if (!r.cfg.agent) {
      const { connect: connectTimeout, linger } = timeouts
      const holdBytes = limits.max_lag
      return new Applier({ address: r.address, connectTimeout, linger, protocol, holdBytes })
    }
    return new AgentTransport({
      address: r.cfg.agent,
      tls: r.cfg.tls,
      frontId,
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
