// The deciding parts of the front wired together, with no listener, timers or processes:
// the input log, the connections and the roles. Front adds the listener, supervision,
// health checks and timers; unit tests drive the core with a fake arbiter and fake
// transports.

import type { EventEmitter } from 'node:events'
import type { Arbiter } from '../arbiter/index.js'
import type { Config } from '../config/index.js'
import type { Logger } from '../logger.js'
import type { ConnEnv } from './conn.js'
import type { FrontCounters } from './counters.js'
import { ConnTable } from './conns.js'
import { Lifecycle } from './lifecycle.js'
import { InputLog } from './log.js'
import type { Replica, TransportFactory } from './replica.js'
import { Roles, type FrontEvents, type RoleHooks } from './roles.js'

export interface CoreOptions {
  config: () => Config
  log: Logger
  arbiter: Arbiter
  replicas: readonly Replica[]
  transport: TransportFactory
  hooks: RoleHooks
  events: EventEmitter<FrontEvents>
  counters: FrontCounters
  /** The metrics hook for commit waits, read at each release. */
  onCommitWait?: () => ((seconds: number) => void) | undefined
  /** A replica's server process now (lib/incarnation.ts). @default none can be told */
  incarnation?: (r: Replica) => Promise<string | null>
}

export interface Core {
  lifecycle: Lifecycle
  input: InputLog
  conns: ConnTable
  roles: Roles
}

export function createCore (o: CoreOptions): Core {
  const lifecycle = new Lifecycle(o.log)
  const input = new InputLog()
  const env: ConnEnv = {
    get config () { return o.config() },
    log: o.log,
    input,
    replicas: o.replicas,
    counters: o.counters,
    get primary () { return roles.primary },
    get protected () { return roles.isProtected === true },
    get holding () { return roles.holding },
    get lagCap () { return conns.lagCap() },
    grant: (perBuffer) => conns.grant(perBuffer),
    get onCommitWait () { return o.onCommitWait?.() },
    diverged: (...args) => roles.diverged(...args),
    forget: (c) => conns.forget(c),
  }
  const conns = new ConnTable(env)
  const incarnation = o.incarnation ?? (() => Promise.resolve(null))
  const roles: Roles = new Roles({ ...o, conns, input, lifecycle, incarnation })
  return { lifecycle, input, conns, roles }
}
