// Every default in one place (durations in ms, sizes in bytes), and the limits the schema
// holds values to.

import type { AgentConfig, Config } from './types.js'

type Defaults = Omit<Config, 'file' | 'replicas'>
type AgentDefaults = Omit<AgentConfig, 'file' | 'server' | 'command' | 'tls'>

/** Every default in one place (durations in ms, sizes in bytes). Frozen: clone before use. */
export const DEFAULTS: Readonly<Defaults> = deepFreeze({
  listen: { host: '127.0.0.1', port: 7000 },
  state_dir: './state',
  output_commit: 'ack',
  protocol: 'raw',
  on_backup_loss: 'continue',
  health_check: { interval: 1000, timeout: 500, fall: 3, rise: 2 },
  timeouts: { connect: 2000, stall: 3000, linger: 5000, heartbeat: 1000 },
  limits: { max_connections: 10000, max_lag: 8 * 1024 * 1024, max_memory: 256 * 1024 * 1024 },
  arbiter: { kind: 'file' },
  log: { level: 'info', format: 'json' },
  admin: { listen: { host: '127.0.0.1', port: 7900 } },
})

/** The agent's defaults; health_check, timeouts and log are the front's. Frozen. */
export const AGENT_DEFAULTS: Readonly<AgentDefaults> = deepFreeze({
  listen: { host: '127.0.0.1', port: 7201 },
  state_dir: './agent-state',
  health_check: { ...DEFAULTS.health_check },
  timeouts: { connect: DEFAULTS.timeouts.connect, linger: DEFAULTS.timeouts.linger },
  log: { ...DEFAULTS.log },
})

/** The `reseed` section's defaults, once it is given (it has no default `command`). */
export const RESEED_DEFAULTS = deepFreeze({
  timeout: 60_000,
  cut_timeout: 5_000,
  open_connections: 'reattach' as const,
  auto: true,
})

/** Below this, max_lag would stall every connection on a single socket read. */
export const MIN_MAX_LAG = 64 * 1024

/** A config file is a few KiB; parsing tens of MiB of YAML would take GiBs of memory. */
export const MAX_CONFIG_BYTES = 1024 * 1024

/** A certificate, key or CA bundle (the system's whole bundle is about 200 KiB). */
export const MAX_PEM_BYTES = 1024 * 1024

/** setTimeout overflows above 2^31-1 ms and fires at once: durations stay under it. */
export const MAX_DURATION = 596 * 3600 * 1000

function deepFreeze<T> (o: T): T {
  if (typeof o === 'object' && o !== null) {
    for (const v of Object.values(o)) deepFreeze(v)
    Object.freeze(o)
  }
  return o
}
